"""Small helpers with no subnet knowledge: errors, retries, atomic writes, logging."""
