"""cost_summary: a daily, readable cost summary sent to an SNS topic (e-mail subscribers)."""
