-- Audit events as commands write them, before they join the chain. A
-- command inserts its event here, in its own transaction, and takes no
-- shared lock; the sealer (tre_store's audit module) moves committed events
-- into audit_events in batches, numbering and hash-chaining them under the
-- audit_head lock. So writers no longer queue on one row until they commit.
CREATE TABLE audit_pending (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    details TEXT NOT NULL,
    trace_id TEXT NOT NULL
);

-- A pending event is never edited: the sealer only moves it into the chain.
CREATE FUNCTION tre_audit_pending_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_pending rows are never updated';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_pending_immutable
    BEFORE UPDATE ON audit_pending
    FOR EACH ROW EXECUTE FUNCTION tre_audit_pending_immutable();
