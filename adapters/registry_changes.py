"""The registry's changes as pure functions: ``(state, ...) -> (new state, result)``.

``AdapterRegistry`` hands them to ``RegistryDocument.mutate``, which may apply one
again to a fresher state when another gateway saved first; so each depends only on the
state it is given and raises the usual typed error when the change is not valid there.
"""

from __future__ import annotations

from collections.abc import Iterable

from adapters.errors import (
    AdapterConflictError,
    AdapterNotFoundError,
    BaseModelMismatchError,
    InvalidAdapterNameError,
    InvalidSplitError,
)
from adapters.manifest import AdapterEntry, AdapterStatus, RegistryState
from adapters.naming import AdapterRef
from adapters.traffic_split import BUCKETS, SplitOptions, TrafficSplit, weights_problem


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
            "splits": _splits_without(state.splits, refs),
        }
    )


def _splits_without(splits: tuple[TrafficSplit, ...], refs: set[str]) -> tuple[TrafficSplit, ...]:
    """``splits`` minus those naming a version in ``refs``: a split only ever routes to
    servable versions, so retiring or removing one of its versions ends it (the name's
    active version serves everyone again)."""
    return tuple(s for s in splits if not any(f"{s.name}@{v}" in refs for v in s.versions))


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
    splits = _splits_without(state.splits, set(retired))
    return state.model_copy(update={"entries": entries, "splits": splits}), list(retired.values())


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


def split_of(state: RegistryState, name: str) -> TrafficSplit | None:
    return next((s for s in state.splits if s.name == name), None)


def set_split(
    state: RegistryState,
    name: str,
    weights: dict[str, int],
    fingerprint: str,
    options: SplitOptions | None = None,
) -> tuple[RegistryState, TrafficSplit]:
    """Route ``name``'s traffic by ``weights`` (version -> percent); replaces any split
    ``name`` had. Every version (the shadow's too) must exist and be servable on this
    base model."""
    if not any(e.name == name for e in state.entries):
        raise AdapterNotFoundError(f"No adapter named {name!r}.", param="name")
    shadow = options.shadow if options is not None else None
    problem = weights_problem(weights, shadowed=shadow is not None)
    if problem is not None:
        raise InvalidSplitError(f"Invalid traffic split: {problem}.")
    for version in weights:
        _check_servable(state, name, version, fingerprint, "weights")
    if shadow is not None:
        _check_servable(state, name, shadow.version, fingerprint, "shadow.version")
        if weights.get(shadow.version) == BUCKETS:  # its callers are never copied
            raise InvalidSplitError(
                f"Invalid traffic split: the shadow version {shadow.version} already gets "
                "every request; shadow a version the split does not send everyone to.",
                param="shadow.version",
            )
    split = TrafficSplit(
        name=name,
        weights=dict(weights),
        shadow=shadow,
        rollback=options.rollback if options is not None else None,
    )
    others = tuple(s for s in state.splits if s.name != name)
    return state.model_copy(update={"splits": (*others, split)}), split


def _check_servable(
    state: RegistryState, name: str, version: str, fingerprint: str, param: str
) -> None:
    entry = next((e for e in state.entries if e.name == name and e.version == version), None)
    if entry is None:
        raise InvalidSplitError(
            f"Invalid traffic split: {name}@{version} does not exist.", param=param
        )
    if entry.status is AdapterStatus.RETIRING:
        raise InvalidSplitError(f"Invalid traffic split: {entry.ref} is retiring.", param=param)
    if entry.base_fingerprint != fingerprint:
        raise InvalidSplitError(
            f"Invalid traffic split: {entry.ref} was validated on another base model.",
            param=param,
        )


def clear_split(
    state: RegistryState, name: str, expected: TrafficSplit | None = None
) -> tuple[RegistryState, TrafficSplit | None]:
    """End ``name``'s split (its active version serves everyone); the split it had.
    With ``expected``, only if the split is still that one (None, nothing changed,
    otherwise): a rollback never ends a split set after the one it judged."""
    if not any(e.name == name for e in state.entries):
        raise AdapterNotFoundError(f"No adapter named {name!r}.", param="name")
    old = split_of(state, name)
    if expected is not None and old != expected:
        return state, None
    others = tuple(s for s in state.splits if s.name != name)
    return state.model_copy(update={"splits": others}), old


def promote(
    state: RegistryState, name: str, version: str, stable: str
) -> tuple[RegistryState, tuple[AdapterEntry, TrafficSplit | None]]:
    """Activate ``name@version`` only while ``stable`` is the active version, and end a
    split that names ``version`` (among its weights or as its shadow); the entry and the
    split it ended. One change of the document: a promotion made meanwhile by another
    gateway makes this one a 409, never a second promotion over the first."""
    entries = [e for e in state.entries if e.name == name]
    if not entries:
        raise AdapterNotFoundError(f"No adapter named {name!r}.", param="name")
    if not any(e.version == version for e in entries):
        raise AdapterNotFoundError(f"No version {version!r} of {name!r}.", param="version")
    check_stable(entries, name, stable)
    state, entry = activate(state, name, version)
    old = split_of(state, name)
    if old is None or version not in old.versions:
        return state, (entry, None)
    others = tuple(s for s in state.splits if s.name != name)
    return state.model_copy(update={"splits": others}), (entry, old)


def check_stable(entries: Iterable[AdapterEntry], name: str, stable: str) -> None:
    """``AdapterConflictError`` ``stable_changed`` (409, param ``stable``) unless
    ``stable`` is the active version of ``name`` among ``entries``."""
    active = next(
        (e.version for e in entries if e.name == name and e.status is AdapterStatus.ACTIVE), None
    )
    if active != stable:
        raise AdapterConflictError(
            f"The active version of {name!r} is {active!r}, not {stable!r}: the "
            "evaluation compared against another version; run the gate again.",
            code="stable_changed",
            param="stable",
        )
