"""Point ids: the caller's id -> a Qdrant point id (an unsigned int or a UUID).

Qdrant accepts only unsigned integers and UUIDs as point ids. A UUID string or an int is
used as is; any other string maps to a deterministic UUID5, so re-adding the same id
overwrites the same point. The caller's original id is always kept in the payload (``id``)
and returned from searches, whatever its form.

>>> to_point_id(7)
7
>>> to_point_id("6F9619FF-8B86-D011-B42D-00C04FC964FF")
'6f9619ff-8b86-d011-b42d-00c04fc964ff'
>>> to_point_id("doc-1") == to_point_id("doc-1") != to_point_id("doc-2")
True
>>> to_point_id("1") == to_point_id(1)
False
"""

from __future__ import annotations

import uuid

from m3_rag.validation import check_text, short_repr

__all__ = ["ID_NAMESPACE", "UserId", "PointId", "to_point_id", "check_user_id"]

# Fixed forever: changing it would orphan every string id already stored.
ID_NAMESPACE = uuid.UUID("5b0c6b6e-3f7a-4c3e-9a51-0d6e3f1b2c7d")

UserId = str | int
PointId = str | int


def check_user_id(user_id: object) -> UserId:
    """The id itself if it is a usable id; otherwise an error saying what is accepted."""
    if isinstance(user_id, uuid.UUID):
        return str(user_id)
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise TypeError(
            f"point id {short_repr(user_id)} is a {type(user_id).__name__}; expected a str or a non-negative int. "
            "Fix: pass ids as strings (any string works) or non-negative integers."
        )
    if isinstance(user_id, str):
        check_text(user_id, f"point id {short_repr(user_id)}")
    if isinstance(user_id, int) and not 0 <= user_id < 2**64:
        raise ValueError(
            f"point id {user_id} is outside Qdrant's unsigned 64-bit range; expected 0 <= id < 2**64. "
            f"Fix: pass it as a string (str({user_id})), which maps to a UUID."
        )
    return user_id


def to_point_id(user_id: UserId) -> PointId:
    """The Qdrant point id for a caller's id (see the module docstring)."""
    user_id = check_user_id(user_id)
    if isinstance(user_id, int):
        return user_id
    try:
        return str(uuid.UUID(user_id))
    except ValueError:
        return str(uuid.uuid5(ID_NAMESPACE, user_id))
