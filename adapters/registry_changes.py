"""The registry's changes as pure functions: ``(state, ...) -> (new state, result)``.

``AdapterRegistry`` hands them to ``RegistryDocument.mutate``, which may apply one
again to a fresher state when another gateway saved first; so each depends only on the
state it is given and raises the usual typed error when the change is not valid there.
"""

from __future__ import annotations

from adapters.errors import (
    AdapterConflictError,
    AdapterNotFoundError,
    BaseModelMismatchError,
    InvalidAdapterNameError,
)
from adapters.manifest import AdapterEntry, AdapterStatus, RegistryState
from adapters.naming import AdapterRef


def find(state: RegistryState, name: str, version: str) -> AdapterEntry:
    for entry in state.entries:
        if entry.name == name and entry.version == version:
            return entry
    raise AdapterNotFoundError(f"No adapter {name}@{version}.", param="name")


def resolve(state: RegistryState, model: str, fingerprint: str) -> AdapterEntry:
    """The servable entry for ``name`` (active version) or ``name@version``."""
    try:
        ref = AdapterRef.parse(model)
    except InvalidAdapterNameError:
        raise AdapterNotFoundError(f"The model {model!r} does not exist.") from None
    entries = [e for e in state.entries if e.name == ref.name]
    if ref.version is None:
        hit = next((e for e in entries if e.status is AdapterStatus.ACTIVE), None)
        if hit is None:
            why = "has no active version" if entries else "does not exist"
            raise AdapterNotFoundError(f"The model {model!r} {why}.")
    else:
        hit = next((e for e in entries if e.version == ref.version), None)
        if hit is None or hit.status is AdapterStatus.RETIRING:
            why = "is retiring" if hit else "does not exist"
            raise AdapterNotFoundError(f"The model {model!r} {why}.")
    if hit.base_fingerprint != fingerprint:
        raise BaseModelMismatchError(
            f"The adapter {hit.ref!r} was validated on another base model; register it "
            "again for the one served now.",
            param="model",
        )
    return hit


def demoted(entries: tuple[AdapterEntry, ...], name: str) -> tuple[AdapterEntry, ...]:
    """``entries`` with the active version of ``name`` (if any) made inactive."""
    return tuple(
        e.model_copy(update={"status": AdapterStatus.INACTIVE})
        if e.name == name and e.status is AdapterStatus.ACTIVE
        else e
        for e in entries
    )


def without(state: RegistryState, chosen: list[AdapterEntry]) -> RegistryState:
    """``state`` minus ``chosen``, whose refs are remembered as removed (never reused)."""
    refs = {e.ref for e in chosen}
    return state.model_copy(
        update={
            "entries": tuple(e for e in state.entries if e.ref not in refs),
            "removed_refs": (*state.removed_refs, *sorted(refs)),
        }
    )


def activate(state: RegistryState, name: str, version: str) -> tuple[RegistryState, AdapterEntry]:
    target = find(state, name, version)
    if target.status is AdapterStatus.RETIRING:
        raise AdapterConflictError(
            f"{target.ref!r} is retiring and cannot be activated.", code="adapter_retiring"
        )
    active = target.model_copy(update={"status": AdapterStatus.ACTIVE})
    entries = tuple(active if e.ref == target.ref else e for e in demoted(state.entries, name))
    return state.model_copy(update={"entries": entries}), active


def retire(
    state: RegistryState, name: str, version: str | None, *, purge: bool
) -> tuple[RegistryState, list[AdapterEntry]]:
    chosen = (
        [find(state, name, version)] if version else [e for e in state.entries if e.name == name]
    )
    if not chosen:
        raise AdapterNotFoundError(f"No adapter named {name!r}.", param="name")
    pinned = [e.ref for e in chosen if e.pinned]
    if pinned:
        raise AdapterConflictError(
            f"{pinned} are pinned; unpin them before retiring.", code="adapter_pinned"
        )
    if purge:
        return without(state, chosen), chosen
    retired = {e.ref: e.model_copy(update={"status": AdapterStatus.RETIRING}) for e in chosen}
    entries = tuple(retired.get(e.ref, e) for e in state.entries)
    return state.model_copy(update={"entries": entries}), list(retired.values())


def remove(state: RegistryState, name: str, version: str) -> tuple[RegistryState, AdapterEntry]:
    entry = find(state, name, version)
    if entry.status is not AdapterStatus.RETIRING:
        raise AdapterConflictError(
            f"{entry.ref!r} is {entry.status.value}; retire it before removing it.",
            code="adapter_not_retired",
        )
    return without(state, [entry]), entry


def set_pinned(
    state: RegistryState, name: str, version: str | None, fingerprint: str, *, pinned: bool
) -> tuple[RegistryState, AdapterEntry]:
    entry = find(state, name, version) if version else resolve(state, name, fingerprint)
    if pinned and entry.status is AdapterStatus.RETIRING:
        raise AdapterConflictError(
            f"{entry.ref!r} is retiring and cannot be pinned.", code="adapter_retiring"
        )
    updated = entry.model_copy(update={"pinned": pinned})
    entries = tuple(updated if e.ref == entry.ref else e for e in state.entries)
    return state.model_copy(update={"entries": entries}), updated
