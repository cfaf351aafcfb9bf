"""Prefect flows over the ``augment`` library, and the ``augment`` console command."""
