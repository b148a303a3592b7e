"""The Lambda functions: ``lambdas/<name>/handler.py`` each, over shared code in ``lambdas/common``."""
