//! The store's tables and their migrations. Each migration is applied once, in order, inside
//! one transaction under a transaction-level advisory lock, so concurrent first uses agree and
//! a crash leaves the schema at a version boundary. A database whose schema is newer than this
//! binary knows is refused rather than written with an older idea of the tables.
//!
//! The audit table is documented for SQL users (README, "The store"); keep that in step.

/// The migrations, oldest first; the schema's version is the number applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
CREATE TABLE flotilla_store (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    id text NOT NULL,
    epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    digest_key text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE flotilla_lock_holder (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    backend_pid integer NOT NULL,
    pid bigint NOT NULL,
    machine text NOT NULL,
    "user" text NOT NULL,
    command text NOT NULL,
    since timestamptz NOT NULL
);
CREATE TABLE flotilla_audit (
    seq bigserial PRIMARY KEY,
    time timestamptz NOT NULL,
    time_nanos integer NOT NULL DEFAULT 0 CHECK (time_nanos BETWEEN 0 AND 999),
    actor text NOT NULL,
    revision text,
    dirty boolean NOT NULL DEFAULT false,
    environment text,
    host text,
    event text NOT NULL,
    changes jsonb NOT NULL DEFAULT '[]',
    error text,
    reason text
);
CREATE INDEX flotilla_audit_time ON flotilla_audit (time);
CREATE INDEX flotilla_audit_host ON flotilla_audit (host, seq);
CREATE INDEX flotilla_audit_environment ON flotilla_audit (environment, seq);
CREATE FUNCTION flotilla_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the Flotilla audit log is append-only';
END $$;
CREATE TRIGGER flotilla_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON flotilla_audit
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_audit_append_only();
CREATE TABLE flotilla_rollouts (
    environment text PRIMARY KEY,
    record jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE flotilla_promotions (
    seq bigserial PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE TABLE flotilla_pauses (
    scope text PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE TABLE flotilla_approvals (
    environment text PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE TABLE flotilla_observations (
    host text PRIMARY KEY,
    fingerprint text NOT NULL,
    at timestamptz NOT NULL
);
"#,
    // 2: hosts a rollout changed, appended one row each instead of rewriting the record.
    r#"
CREATE TABLE flotilla_rollout_changed (
    environment text NOT NULL,
    seq bigserial NOT NULL,
    host jsonb NOT NULL,
    PRIMARY KEY (environment, seq)
);
"#,
];

/// The newest schema version this binary reads and writes.
pub(super) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Serialises migrations between processes (a transaction-level advisory lock).
pub(super) const MIGRATION_LOCK: i64 = 0x666c_6f74_696c_6c00;

/// The version table; created before anything else, outside the numbered migrations.
pub(super) const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS flotilla_schema (version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";
