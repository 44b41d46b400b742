-- PHI at rest (issue 10, point 3) ----------------------------------------------------------------
-- Every PHI column becomes bytea holding a value sealed by the application (XChaCha20-Poly1305
-- under INTAKE_ENCRYPTION_KEYS; crates/store/src/sealed.rs lists the columns). SQL has no key, so
-- this migration cannot seal: it moves every plaintext value into `plaintext_to_seal` and empties
-- the column; `Store::migrate` then seals those values into their columns in batches, in Rust, and
-- deletes them from here. After the first `intake migrate` with keys the table is empty.

CREATE TABLE plaintext_to_seal (
    id       bigserial PRIMARY KEY,
    tbl      text   NOT NULL,
    col      text   NOT NULL,
    -- The row's primary key, as text (how the value finds its row again).
    locator  text[] NOT NULL,
    -- The row's columns bound with the sealed value (see sealed.rs), as text.
    place    text[] NOT NULL,
    -- The value's canonical plaintext: text as UTF-8, dates as YYYY-MM-DD, booleans as true/false.
    value    bytea  NOT NULL
);

-- Bodies and parked events.
INSERT INTO plaintext_to_seal (tbl, col, locator, place, value)
SELECT 'raw_events', 'body', ARRAY[envelope_id::text], ARRAY[envelope_id::text], body
FROM raw_events;
INSERT INTO plaintext_to_seal (tbl, col, locator, place, value)
SELECT 'dead_letters', 'body', ARRAY[id::text], ARRAY[envelope_id::text], body
FROM dead_letters WHERE body IS NOT NULL;
INSERT INTO plaintext_to_seal (tbl, col, locator, place, value)
SELECT 'parked_events', 'event', ARRAY[id::text], ARRAY[endpoint, dedupe_key], convert_to(event::text, 'UTF8')
FROM parked_events;

-- contact_phi: every column but its key.
INSERT INTO plaintext_to_seal (tbl, col, locator, place, value)
SELECT 'contact_phi', v.col, ARRAY[p.spark_id], ARRAY[p.spark_id], convert_to(v.value, 'UTF8')
FROM contact_phi p CROSS JOIN LATERAL (VALUES
    ('dob', to_char(p.dob, 'YYYY-MM-DD')),
    ('mbi', p.mbi),
    ('has_medicaid', p.has_medicaid::text),
    ('has_lis', p.has_lis::text),
    ('lis_certification_date', to_char(p.lis_certification_date, 'YYYY-MM-DD')),
    ('drug_subsidy', p.drug_subsidy),
    ('has_ssi', p.has_ssi::text),
    ('part_a_enrollment_date', to_char(p.part_a_enrollment_date, 'YYYY-MM-DD')),
    ('part_b_enrollment_date', to_char(p.part_b_enrollment_date, 'YYYY-MM-DD'))
) AS v(col, value)
WHERE v.value IS NOT NULL;

-- contact_policies: the provider sends them as PHI (`phi.policies`).
INSERT INTO plaintext_to_seal (tbl, col, locator, place, value)
SELECT 'contact_policies', v.col, ARRAY[p.spark_id, p.category, p.slot],
       ARRAY[p.spark_id, p.category, p.slot], convert_to(v.value, 'UTF8')
FROM contact_policies p CROSS JOIN LATERAL (VALUES
    ('name', p.name),
    ('bid_id', p.bid_id),
    ('carrier', p.carrier),
    ('effective_date', to_char(p.effective_date, 'YYYY-MM-DD')),
    ('expiration_date', to_char(p.expiration_date, 'YYYY-MM-DD')),
    ('submitted_date', to_char(p.submitted_date, 'YYYY-MM-DD')),
    ('policy_type', p.policy_type),
    ('beq_status', p.beq_status)
) AS v(col, value)
WHERE v.value IS NOT NULL;

-- healthsherpa_members: names and date of birth of the people on an application.
INSERT INTO plaintext_to_seal (tbl, col, locator, place, value)
SELECT 'healthsherpa_members', v.col, ARRAY[m.application_key, m.member_id],
       ARRAY[m.application_key, m.member_id], convert_to(v.value, 'UTF8')
FROM healthsherpa_members m CROSS JOIN LATERAL (VALUES
    ('first_name', m.first_name),
    ('middle_name', m.middle_name),
    ('last_name', m.last_name),
    ('date_of_birth', to_char(m.date_of_birth, 'YYYY-MM-DD'))
) AS v(col, value)
WHERE v.value IS NOT NULL;

-- Empty the columns. A body (NOT NULL) waits as an empty value, which never opens: a read before
-- it is sealed fails loudly instead of passing for a body.
UPDATE raw_events SET body = '\x';
UPDATE dead_letters SET body = NULL WHERE body IS NOT NULL;
ALTER TABLE parked_events ALTER COLUMN event TYPE bytea USING '\x'::bytea;

ALTER TABLE contact_phi
    ALTER COLUMN dob TYPE bytea USING NULL,
    ALTER COLUMN mbi TYPE bytea USING NULL,
    ALTER COLUMN has_medicaid TYPE bytea USING NULL,
    ALTER COLUMN has_lis TYPE bytea USING NULL,
    ALTER COLUMN lis_certification_date TYPE bytea USING NULL,
    ALTER COLUMN drug_subsidy TYPE bytea USING NULL,
    ALTER COLUMN has_ssi TYPE bytea USING NULL,
    ALTER COLUMN part_a_enrollment_date TYPE bytea USING NULL,
    ALTER COLUMN part_b_enrollment_date TYPE bytea USING NULL;

ALTER TABLE contact_policies
    ALTER COLUMN name TYPE bytea USING NULL,
    ALTER COLUMN bid_id TYPE bytea USING NULL,
    ALTER COLUMN carrier TYPE bytea USING NULL,
    ALTER COLUMN effective_date TYPE bytea USING NULL,
    ALTER COLUMN expiration_date TYPE bytea USING NULL,
    ALTER COLUMN submitted_date TYPE bytea USING NULL,
    ALTER COLUMN policy_type TYPE bytea USING NULL,
    ALTER COLUMN beq_status TYPE bytea USING NULL;

ALTER TABLE healthsherpa_members
    ALTER COLUMN first_name TYPE bytea USING NULL,
    ALTER COLUMN middle_name TYPE bytea USING NULL,
    ALTER COLUMN last_name TYPE bytea USING NULL,
    ALTER COLUMN date_of_birth TYPE bytea USING NULL;

-- The digest of the body that set a NewestWins entity's state was a plain SHA-256 of a body that
-- may hold PHI (anyone could confirm a guessed body against it). It becomes a keyed hash
-- (HMAC-SHA256 under INTAKE_HMAC_KEY, lowercase hex). Old digests cannot be converted: cleared,
-- so the next retry of a current snapshot is applied once more instead of counted a duplicate.
ALTER TABLE entities RENAME COLUMN content_sha256 TO content_hmac;
UPDATE entities SET content_hmac = NULL WHERE content_hmac IS NOT NULL;
