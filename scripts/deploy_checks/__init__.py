"""The checks of scripts/k8s_checks.py, one module per target."""
