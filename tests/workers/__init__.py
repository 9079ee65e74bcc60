"""Tests of the worker process: real subprocesses against real databases."""
