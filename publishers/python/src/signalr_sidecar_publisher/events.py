"""Typed builders, one per event_type of ``protocol/routes.toml``.

Each returns a validated ``Envelope`` (fresh UUID v4 ``event_id``, UTC
``timestamp``) or raises ``ValidationError`` naming the bad field, before
anything is sent. Extra keyword arguments (``**extra``) are kept in the
payload and passed through to clients unchanged (CONTRACT section 10).
"""

from __future__ import annotations

from typing import Any

from .envelope import Envelope, utc_now


def _drop_none(values: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None or k in keep}


def build(
    event_type: str,
    room_id: str,
    payload: dict[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: str | None = None,
) -> Envelope:
    """Any event type: an envelope around ``payload``, validated against the schemas."""
    kwargs: dict[str, Any] = {}
    if event_id is not None:
        kwargs["event_id"] = event_id
    if timestamp is not None:
        kwargs["timestamp"] = timestamp
    return Envelope(event_type=event_type, room_id=room_id, payload=payload, metadata=metadata, **kwargs).validate()


def chat_message(
    room_id: str,
    *,
    id: str,
    request_id: str,
    content: str,
    sequence_number: int,
    created_at: str,
    sender_id: str | None = None,
    sender: dict[str, Any] | None = None,
    is_screenshot: bool = False,
    client_temp_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> Envelope:
    """``chat_message`` -> ``ReceiveMessage`` (seed 004 ChatMessagePayload). ``sender_id``
    is None for system messages and is always sent."""
    payload = _drop_none(
        {
            "id": id,
            "request_id": request_id,
            "sender_id": sender_id,
            "sender": sender,
            "content": content,
            "sequence_number": sequence_number,
            "is_screenshot": is_screenshot,
            "created_at": created_at,
            "client_temp_id": client_temp_id,
            **extra,
        },
        keep=("sender_id",),
    )
    return build("chat_message", room_id, payload, metadata=metadata)


def _typing(event_type: str, is_typing: bool, room_id: str, user_id: str, username: str, metadata, extra) -> Envelope:
    payload = {"user_id": user_id, "username": username, "is_typing": is_typing, **extra}
    return build(event_type, room_id, payload, metadata=metadata)


def typing_start(
    room_id: str, *, user_id: str, username: str, metadata: dict[str, Any] | None = None, **extra: Any
) -> Envelope:
    """``typing_start`` -> ``UserTyping`` with ``is_typing: true`` (coalesced per room and user)."""
    return _typing("typing_start", True, room_id, user_id, username, metadata, extra)


def typing_stop(
    room_id: str, *, user_id: str, username: str, metadata: dict[str, Any] | None = None, **extra: Any
) -> Envelope:
    """``typing_stop`` -> ``UserTyping`` with ``is_typing: false``."""
    return _typing("typing_stop", False, room_id, user_id, username, metadata, extra)


def typing(room_id: str, *, user_id: str, username: str, is_typing: bool, **kwargs: Any) -> Envelope:
    """``typing_start`` or ``typing_stop`` by ``is_typing``."""
    fn = typing_start if is_typing else typing_stop
    return fn(room_id, user_id=user_id, username=username, **kwargs)


def read_receipt(
    room_id: str,
    *,
    user_id: str,
    last_read_message_id: str | None = None,
    read_at: str | None = None,
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> Envelope:
    """``read_receipt`` -> ``ReadReceipt`` (coalesced per room and user)."""
    payload = _drop_none(
        {"user_id": user_id, "last_read_message_id": last_read_message_id, "read_at": read_at, **extra}
    )
    return build("read_receipt", room_id, payload, metadata=metadata)


def status_change(
    room_id: str,
    *,
    request_id: str,
    old_status: str,
    new_status: str,
    changed_by: str,
    changed_at: str | None = None,
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> Envelope:
    """``status_change`` -> ``TicketStatusChanged`` on the ticket hub (seed 004 StatusChangePayload).
    ``changed_at`` defaults to now."""
    payload = {
        "request_id": request_id,
        "old_status": old_status,
        "new_status": new_status,
        "changed_by": changed_by,
        "changed_at": changed_at or utc_now(),
        **extra,
    }
    return build("status_change", room_id, payload, metadata=metadata)


def assignment_change(
    room_id: str,
    *,
    request_id: str,
    old_assignee_id: str | None = None,
    new_assignee_id: str | None = None,
    changed_by: str | None = None,
    changed_at: str | None = None,
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> Envelope:
    """``assignment_change`` -> ``TicketAssigned`` on the ticket hub. ``changed_at`` defaults to now."""
    payload = _drop_none(
        {
            "request_id": request_id,
            "old_assignee_id": old_assignee_id,
            "new_assignee_id": new_assignee_id,
            "changed_by": changed_by,
            "changed_at": changed_at or utc_now(),
            **extra,
        },
        keep=("old_assignee_id", "new_assignee_id"),
    )
    return build("assignment_change", room_id, payload, metadata=metadata)


def notification(
    *,
    id: str,
    user_id: str,
    title: str,
    message: str,
    created_at: str | None = None,
    room_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> Envelope:
    """``notification`` -> ``ReceiveNotification``, by default to ``user:<user_id>`` (every
    connection of that user on the notification hub). ``created_at`` defaults to now."""
    payload = {
        "id": id,
        "user_id": user_id,
        "title": title,
        "message": message,
        "created_at": created_at or utc_now(),
        **extra,
    }
    return build("notification", room_id or f"user:{user_id}", payload, metadata=metadata)


def _remote(event_type: str, room_id: str, request_id: str, session_id, agent_id, metadata, extra) -> Envelope:
    payload = _drop_none({"request_id": request_id, "session_id": session_id, "agent_id": agent_id, **extra})
    return build(event_type, room_id, payload, metadata=metadata)


def remote_session_start(
    room_id: str,
    *,
    request_id: str,
    session_id: str | None = None,
    agent_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> Envelope:
    """``remote_session_start`` -> ``RemoteSessionStarted`` (usually ``room_id="user:<requester>"``)."""
    return _remote("remote_session_start", room_id, request_id, session_id, agent_id, metadata, extra)


def remote_session_end(
    room_id: str,
    *,
    request_id: str,
    session_id: str | None = None,
    agent_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> Envelope:
    """``remote_session_end`` -> ``RemoteSessionEnded``."""
    return _remote("remote_session_end", room_id, request_id, session_id, agent_id, metadata, extra)


def user_joined(
    room_id: str, *, user_id: str, username: str | None = None, metadata: dict[str, Any] | None = None
) -> Envelope:
    """``user_joined`` -> ``UserJoined`` (normally published by the sidecar itself, CONTRACT 11)."""
    payload = {"user_id": user_id, "username": username, "room_id": room_id}
    return build("user_joined", room_id, payload, metadata=metadata)


def user_left(
    room_id: str, *, user_id: str, username: str | None = None, metadata: dict[str, Any] | None = None
) -> Envelope:
    """``user_left`` -> ``UserLeft`` (normally published by the sidecar itself, CONTRACT 11)."""
    payload = {"user_id": user_id, "username": username, "room_id": room_id}
    return build("user_left", room_id, payload, metadata=metadata)


#: The builder of each event type, keyed like ``protocol/routes.toml``.
BUILDERS = {
    "chat_message": chat_message,
    "typing_start": typing_start,
    "typing_stop": typing_stop,
    "read_receipt": read_receipt,
    "status_change": status_change,
    "assignment_change": assignment_change,
    "notification": notification,
    "remote_session_start": remote_session_start,
    "remote_session_end": remote_session_end,
    "user_joined": user_joined,
    "user_left": user_left,
}
