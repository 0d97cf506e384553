"""The gateway's side of the adapter lifecycle, over ``adapters.registry``.

- ``InFlightTracker``: requests running on each adapter version; drain before unload.
- ``TrackedEngine``: the ``Engine`` the services use; counts every adapter request.
- ``AdapterLifecycle``: register, activate, retire, pin, pre-warm, with the engine.
- ``startup``: config adapters imported into the registry, leftovers cleaned, pins restored.
- ``residency``: where each version's weights are (slot, CPU cache, disk) for listings.
"""
