"""The coordinator: passes, creation, dispatch and wake-ups, over the store and the broker."""
