"""Entry points launched by Dagster Pipes (outside ml/, which knows nothing of Dagster or its Pipes)."""
