"""The validator: its settings, persisted state, step loop, background threads and reports."""
