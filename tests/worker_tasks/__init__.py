"""Task modules that ``pgjobs worker`` imports in tests/worker/test_processes.py."""
