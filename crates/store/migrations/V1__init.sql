-- Pipeline bookkeeping -------------------------------------------------------------------------

-- One row per event ever accepted for processing: the exactly-once guard. A second delivery of
-- the same (endpoint, dedupe_key) conflicts here and is counted as a duplicate.
CREATE TABLE inbox (
    endpoint      text        NOT NULL,
    dedupe_key    text        NOT NULL,
    envelope_id   uuid        NOT NULL,
    provider      text        NOT NULL,
    event_type    text        NOT NULL,
    entity_kind   text        NOT NULL,
    entity_id     text        NOT NULL,
    received_at   timestamptz NOT NULL,
    occurred_at   timestamptz NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    -- applied | parked | released | stale | dead_lettered
    outcome       text        NOT NULL,
    duplicates    integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint, dedupe_key)
);

-- Envelopes as received, for audit and replay; pruned after the retention period.
CREATE TABLE raw_events (
    envelope_id  uuid        PRIMARY KEY,
    endpoint     text        NOT NULL,
    provider     text        NOT NULL,
    received_at  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    headers      jsonb       NOT NULL,
    body         bytea       NOT NULL
);
CREATE INDEX raw_events_received_at ON raw_events (received_at);

-- Ordering state per entity; its row is the entity's lock (SELECT ... FOR UPDATE via upsert).
CREATE TABLE entities (
    kind           text        NOT NULL,
    id             text        NOT NULL,
    applied_types  text[]      NOT NULL DEFAULT '{}',
    version        timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, id)
);

-- Events waiting for a prerequisite event of the same entity.
CREATE TABLE parked_events (
    id           bigserial   PRIMARY KEY,
    entity_kind  text        NOT NULL,
    entity_id    text        NOT NULL,
    waits_for    text        NOT NULL,
    endpoint     text        NOT NULL,
    dedupe_key   text        NOT NULL,
    envelope_id  uuid        NOT NULL,
    provider     text        NOT NULL,
    event_type   text        NOT NULL,
    event        jsonb       NOT NULL,
    received_at  timestamptz NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    deadline     timestamptz NOT NULL
);
CREATE INDEX parked_events_entity ON parked_events (entity_kind, entity_id, id);
CREATE INDEX parked_events_deadline ON parked_events (deadline);

-- Events given up on: permanent errors, retries exhausted, ordering timeouts.
CREATE TABLE dead_letters (
    id                bigserial   PRIMARY KEY,
    envelope_id       uuid        NOT NULL,
    endpoint          text        NOT NULL,
    provider          text        NOT NULL,
    event_type        text,
    dedupe_key        text,
    reason            text        NOT NULL,
    attempts          integer     NOT NULL,
    first_error       text,
    last_error        text,
    received_at       timestamptz NOT NULL,
    dead_lettered_at  timestamptz NOT NULL DEFAULT now(),
    headers           jsonb       NOT NULL DEFAULT '[]',
    body              bytea
);
CREATE INDEX dead_letters_reason ON dead_letters (reason, dead_lettered_at);
-- A redelivery of a message already dead-lettered (its ack was lost) adds no second row.
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (envelope_id, COALESCE(dedupe_key, ''), reason, attempts);

-- Downstream notifications written in the same transaction as the change (outbox relay reads).
CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    topic         text        NOT NULL,
    contact_id    text        NOT NULL,
    envelope_id   uuid        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Spark contacts ---------------------------------------------------------------------------------

CREATE TABLE contacts (
    spark_id               text        PRIMARY KEY,
    external_id            text,
    first_name             text,
    middle_name            text,
    last_name              text,
    preferred_name         text,
    full_name              text,
    full_preferred_name    text,
    home_phone             text,
    mobile_phone           text,
    email                  text,
    home_address           text,
    shipping_address       text,
    sex                    text,
    gender                 text,
    soa_is_signed          boolean,
    soa_signed_at          text,
    veteran_status         text,
    primary_contact        text,
    preferred_language     text,
    needs_assessment_link  text,
    poc_full_name          text,
    poc_relationship       text,
    poc_home_phone         text,
    poc_mobile_phone       text,
    poc_email              text,
    agent_first_name       text,
    agent_last_name        text,
    agent_full_name        text,
    agent_office_phone     text,
    agent_email            text,
    snapshot_received_at   timestamptz NOT NULL,
    snapshot_envelope_id   uuid        NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- PHI, kept apart so access to it can be granted separately.
CREATE TABLE contact_phi (
    spark_id                text PRIMARY KEY REFERENCES contacts ON DELETE CASCADE,
    dob                     date,
    mbi                     text,
    has_medicaid            boolean,
    has_lis                 boolean,
    lis_certification_date  date,
    drug_subsidy            text,
    has_ssi                 boolean,
    part_a_enrollment_date  date,
    part_b_enrollment_date  date
);

CREATE TABLE contact_policies (
    spark_id         text NOT NULL REFERENCES contacts ON DELETE CASCADE,
    category         text NOT NULL CHECK (category IN ('active', 'pending', 'plan_exit')),
    slot             text NOT NULL,
    name             text,
    bid_id           text,
    carrier          text,
    effective_date   date,
    expiration_date  date,
    submitted_date   date,
    policy_type      text,
    beq_status       text,
    PRIMARY KEY (spark_id, category, slot)
);

-- SparkLoop --------------------------------------------------------------------------------------

CREATE TABLE sparkloop_subscribers (
    id             text        PRIMARY KEY,
    campaign_id    text,
    first_name     text,
    name           text,
    email          text,
    referral_code  text,
    referral_link  text,
    referred       boolean,
    tot_referrals  integer,
    next_reward    integer,
    partner_id     text,
    created_at     timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- status: tracked (new_referral) < pending < verified; it never moves back.
CREATE TABLE sparkloop_referrals (
    campaign_id    text        NOT NULL,
    subscriber_id  text        NOT NULL,
    referrer_id    text,
    partner_id     text,
    partner_name   text,
    status         text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, subscriber_id)
);

CREATE TABLE sparkloop_rewards (
    campaign_id            text        NOT NULL,
    subscriber_id          text        NOT NULL,
    reward_id              text        NOT NULL,
    reward_name            text,
    reward_referrals       integer,
    recurring              boolean,
    coupon_code            text,
    referrals              integer,
    unlocked_at            timestamptz,
    redeemed_at            timestamptz,
    variant_name           text,
    variant_sku            text,
    shipping_name          text,
    shipping_phone         text,
    shipping_address_1     text,
    shipping_address_2     text,
    shipping_city          text,
    shipping_state_code    text,
    shipping_zipcode       text,
    shipping_country_code  text,
    PRIMARY KEY (campaign_id, subscriber_id, reward_id)
);

-- Spark360 ---------------------------------------------------------------------------------------

CREATE TABLE leads (
    id               text        PRIMARY KEY,
    -- address_info_provided < personal_info_and_estimate_provided < contact_info_provided
    status           text        NOT NULL,
    address          jsonb,
    owner_occupied   boolean,
    enrichment       jsonb,
    rental_alert     jsonb,
    contact_request  jsonb,
    source_tracking  jsonb,
    enriched_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE widgets (
    id          text        PRIMARY KEY,
    name        text,
    status      text,
    status_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- HealthSherpa -----------------------------------------------------------------------------------

CREATE TABLE healthsherpa_applications (
    application_key         text        PRIMARY KEY,
    application_id          text,
    external_id             text,
    last_event_type         text        NOT NULL,
    policy_status           text,
    status_event_at         timestamptz NOT NULL,
    policy_aor_npn          text,
    submitter_npn           text,
    npn_used_at_submission  text,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE healthsherpa_members (
    application_key  text NOT NULL,
    member_id        text NOT NULL,
    first_name       text,
    middle_name      text,
    last_name        text,
    date_of_birth    date,
    PRIMARY KEY (application_key, member_id)
);

CREATE TABLE healthsherpa_policies (
    policy_id                   text        PRIMARY KEY,
    application_key             text        NOT NULL,
    effective_date              date,
    expiration_date             date,
    status                      text,
    status_event_at             timestamptz NOT NULL,
    plan_hios_id                text,
    gross_premium               double precision,
    agent_npn                   text,
    agent_first_name            text,
    agent_last_name             text,
    agent_state_license_number  text,
    agent_email                 text,
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE healthsherpa_policy_members (
    policy_id       text NOT NULL,
    member_id       text NOT NULL,
    effective_date  date,
    removed_date    date,
    PRIMARY KEY (policy_id, member_id)
);

-- Every status event, applied or arrived late.
CREATE TABLE healthsherpa_status_history (
    id               bigserial   PRIMARY KEY,
    transaction_id   text        NOT NULL,
    application_key  text        NOT NULL,
    policy_id        text,
    event_type       text        NOT NULL,
    status           text,
    event_timestamp  timestamptz NOT NULL,
    applied          boolean     NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX healthsherpa_status_history_policy ON healthsherpa_status_history (policy_id, event_timestamp);
CREATE INDEX healthsherpa_status_history_application
    ON healthsherpa_status_history (application_key, event_timestamp);

-- Ranks of one-way statuses: state only ever moves to a higher rank.
CREATE FUNCTION sparkloop_status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    RETURN CASE status WHEN 'tracked' THEN 1 WHEN 'pending' THEN 2 WHEN 'verified' THEN 3 ELSE 0 END;

CREATE FUNCTION lead_status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    RETURN CASE status
        WHEN 'address_info_provided' THEN 1
        WHEN 'personal_info_and_estimate_provided' THEN 2
        WHEN 'contact_info_provided' THEN 3
        ELSE 0 END;
