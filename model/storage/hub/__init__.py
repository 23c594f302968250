"""The hub port: where miners publish model folders and validators fetch them."""

from model.storage.hub.protocol import Hub, RepoFile, RepoInfo

__all__ = ["Hub", "RepoFile", "RepoInfo"]
