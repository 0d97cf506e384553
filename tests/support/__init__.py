"""Test helpers: fakes, fixtures and servers shared by the test modules."""
