"""The only MLflow code: where runs are stored, and what each run records."""
