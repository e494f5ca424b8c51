"""Cold-start evaluation harness: baselines, test-time adaptation tuned on validation users, reports."""
