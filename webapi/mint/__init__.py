"""The original MInt distributed-computing protocol (`/mi-distcomp-api/`) served over our store.

A translation seam only: every route maps onto the job store, state machine and auth that the
native API uses (see docs/mint-migration.md); nothing here keeps state of its own.
"""
