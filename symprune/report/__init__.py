"""Reporting: run records in, paper tables and plots out (``symprune-tables``)."""
