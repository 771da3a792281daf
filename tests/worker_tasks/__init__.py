"""Task modules that ``pgjobs worker`` imports in tests/test_worker_processes.py."""
