"""The worker: in-process, as real processes, its policy, chaos and limits."""
