"""The hub port: where miners publish model folders and validators fetch them."""

from model.storage.hub.protocol import Hub, PublishingHub, RepoFile, RepoInfo

__all__ = ["Hub", "PublishingHub", "RepoFile", "RepoInfo"]
