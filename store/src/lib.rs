//! cairn-store: the `.cairn/` store.
