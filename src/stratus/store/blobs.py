"""A namespace's view of the content-addressed blobs: it sees and references only the digests it
owns (uploaded itself, written for it by the platform, or shared with it by the global admin).
Any other digest is answered exactly as one that was never stored, so that no namespace can
learn what another has; the bytes are still stored once, whoever uploads them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from stratus.errors import NotFound
from stratus.store.artifacts import ArtifactStore
from stratus.store.owners import BlobOwners


@dataclass(frozen=True, slots=True)
class Uploaded:
    size: int  # plaintext bytes
    created: bool  # whether the namespace owns the digest only since this upload


class NamespaceBlobs:
    def __init__(self, artifacts: ArtifactStore, owners: BlobOwners) -> None:
        self.artifacts = artifacts
        self.owners = owners

    def visible(self, namespace: str, digest: str) -> bool:
        """Owned, stored and whole. Ownership is asked first: a digest the namespace does not
        own never touches the file system, so answering takes the same path as for one that
        does not exist."""
        return self.owners.owns(namespace, digest) and self.artifacts.has_sound_blob(digest)

    def require(self, namespace: str, digest: str, label: str) -> None:
        """NotFound, the same for a digest another namespace owns as for one never stored,
        unless ``namespace`` may reference it."""
        if not (self.owners.owns(namespace, digest) and self.artifacts.has_blob(digest)):
            raise NotFound(f"{label}: blob {digest[:12]} has not been uploaded")

    async def upload(self, namespace: str, digest: str, chunks: AsyncIterator[bytes],
                     max_bytes: int) -> Uploaded:
        """Store what a client sends under ``digest`` for ``namespace``.

        A namespace that owns the digest already is told so without sending the bytes again.
        Any other upload proves possession: the whole body is streamed, sealed and hashed as
        a first upload would be, whether or not the bytes are on disk already (where the copy
        on disk is kept and the new one dropped), and only a body whose sha256 is ``digest``
        makes the namespace an owner; wrong bytes are a 400 and change nothing."""
        if await asyncio.to_thread(self.visible, namespace, digest):
            size = await asyncio.to_thread(self.artifacts.size_of, digest)
            return Uploaded(size or 0, created=False)
        size = await self.artifacts.write_blob(digest, chunks, max_bytes)
        await asyncio.to_thread(self.owners.grant, namespace, digest)
        return Uploaded(size, created=True)

    async def keep(self, namespace: str, digest: str, chunks: AsyncIterator[bytes],
                   max_bytes: int) -> None:
        """A blob the platform writes on a namespace's behalf (a job's checkpoint or saved
        model, an evaluation's empty bundle): stored if absent, and owned by ``namespace``."""
        if not await asyncio.to_thread(self.artifacts.has_sound_blob, digest):
            await self.artifacts.write_blob(digest, chunks, max_bytes)
        await asyncio.to_thread(self.owners.grant, namespace, digest)

    def share(self, digest: str, namespace: str) -> bool:
        """The global admin gives ``namespace`` a stored digest; False when it owned it."""
        if not self.artifacts.has_sound_blob(digest):
            raise NotFound(f"blob {digest} not found")
        return self.owners.grant(namespace, digest)

    def adopt(self, namespace: str, digests: Iterable[str]) -> None:
        """What the global admin references while acting in ``namespace`` (a deploy, a push,
        a job) is shared with it, as the admin sees every stored blob; the rest is left for
        the usual check to refuse."""
        for digest in digests:
            if digest and self.artifacts.has_blob(digest):
                self.owners.grant(namespace, digest)

    def collect(self, referenced: set[str], grace_s: float) -> dict[str, int]:
        """Delete the blobs nothing references, and their ownership. A blob given to a
        namespace within the grace period stays, as one written then does: its owner may be
        about to reference it."""
        started = time.time()
        kept = referenced | self.owners.granted_since(started - grace_s)
        removed, freed = self.artifacts.collect(kept, grace_s)
        self.owners.forget(removed, before=started)
        return {"blobs_removed": len(removed), "bytes_freed": freed}
