"""Passes each frame once while two sockets of one link overlap during a token handover.

Both sockets carry the same ordered stream from the moment the new one subscribes, so a frame on
one socket is a copy exactly when the other socket has delivered an identical frame not yet
paired. Counting per socket (a multiset, not a set) keeps genuine repeats: a fact the PBX sends
twice arrives twice on each socket and is passed twice.
"""

from __future__ import annotations

import hashlib
from collections import Counter


class OverlapDeduper:
    def __init__(self) -> None:
        self._unpaired: dict[int, Counter[bytes]] | None = None

    def begin(self, old: int, new: int) -> None:
        """Call before the new socket subscribes, so no frame of the overlap goes unseen."""
        self._unpaired = {old: Counter(), new: Counter()}

    def end(self) -> None:
        self._unpaired = None

    @property
    def active(self) -> bool:
        return self._unpaired is not None

    def is_copy(self, generation: int, frame: str | bytes) -> bool:
        unpaired = self._unpaired
        if unpaired is None or generation not in unpaired:
            return False
        data = frame.encode() if isinstance(frame, str) else frame
        key = hashlib.blake2b(data, digest_size=16).digest()
        other = next(counts for gen, counts in unpaired.items() if gen != generation)
        if other[key] > 0:
            other[key] -= 1
            return True
        unpaired[generation][key] += 1
        return False
