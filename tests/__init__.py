"""Test packages mirror the project layout (tests.adamod, tests.studies, ...)."""
