"""Tests of studies/db: repository, queue, migrations, Optuna bridge."""
