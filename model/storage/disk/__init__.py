"""The validator's on-disk model store."""

from model.storage.disk.model_store import DiskModelStore

__all__ = ["DiskModelStore"]
