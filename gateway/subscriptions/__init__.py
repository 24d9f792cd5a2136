"""FHIR Subscriptions (docs/fhir/subscriptions.md): the write path's outbox, the `Subscription` resource
owned by its client, the matcher that turns outbox rows into numbered events as each subscriber, and the
deliverer that sends them in order, at least once, to endpoints the client's registration allows."""
