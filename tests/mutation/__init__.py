"""Mutation runs that need the database, too slow for the test suite: run them by hand."""
