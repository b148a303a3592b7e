"""cost_publisher: month-to-date spend as the metric TLFIF/Cost CurrentSpendEUR, every 15 minutes."""
