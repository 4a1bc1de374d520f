-- Credits. accounts.credit_balance is what an account can spend now; reserved_credits is held
-- by generations still running. The ledger holds every grant and charge, so for every account
-- sum(ledger.amount) = credit_balance + reserved_credits, and neither column goes below zero.
alter table accounts add column reserved_credits bigint not null default 0 check (reserved_credits >= 0);

-- Emails and usernames are unique compared case-insensitively.
create unique index accounts_email_ci on accounts (lower(email)) where email is not null;
create unique index accounts_username_ci on accounts (lower(username)) where username <> '';

-- API keys: only the SHA-256 of the secret is stored, with its first characters in clear to
-- find it and to show it in listings.
create table api_keys (
  id uuid primary key default gen_random_uuid(),
  -- creation order, for newest-first pages
  seq bigint generated always as identity unique,
  account_id uuid not null references accounts (id) on delete cascade,
  name text not null check (char_length(name) between 1 and 100),
  prefix text not null unique,
  secret_hash bytea not null check (octet_length(secret_hash) = 32),
  -- null: the server's default limit
  rate_limit_per_minute integer check (rate_limit_per_minute between 1 and 100000),
  created_at timestamptz not null default now(),
  last_used_at timestamptz,
  revoked_at timestamptz
);

create index api_keys_account on api_keys (account_id, seq desc);

-- The credit ledger: append-only, one row per grant (kind 1, amount > 0) or charge for a
-- completed generation (kind 2, amount < 0). Credits held while a generation runs are not rows.
create table ledger (
  id uuid primary key default gen_random_uuid(),
  seq bigint generated always as identity unique,
  account_id uuid not null references accounts (id) on delete cascade,
  amount bigint not null check (amount <> 0),
  kind smallint not null check (kind in (1, 2)),
  description text not null check (char_length(description) <= 200),
  -- the generation id of a charge, the request id of a grant that had one
  reference_id text not null default '',
  -- credit_balance + reserved_credits right after this row
  balance_after bigint not null check (balance_after >= 0),
  -- the admin whose GrantCredits made a grant, and its AIP-155 request id
  granted_by uuid references accounts (id) on delete set null,
  request_id uuid,
  created_at timestamptz not null default now(),
  check ((kind = 1) = (amount > 0))
);

create index ledger_account on ledger (account_id, seq desc);
create unique index ledger_grant_request on ledger (granted_by, request_id) where request_id is not null;

-- Generations. A row is inserted with status 0 in the transaction that reserves its cost, and
-- either becomes status 1 in the transaction that charges it or is deleted in the one that
-- releases the reservation. The unique request id makes racing retries share one row.
create table generations (
  id uuid primary key,
  account_id uuid not null references accounts (id) on delete cascade,
  request_id uuid,
  status smallint not null default 0 check (status in (0, 1)),
  prompt text not null,
  model_id text not null,
  provider_id text not null,
  aspect_ratio text not null,
  style text not null default '',
  -- 0 none, 1 default, 2 deep
  thinking_level smallint not null default 0,
  credit_cost bigint not null check (credit_cost >= 0),
  media_type text not null default '',
  image_id bigint references images (id) on delete set null,
  -- database time, so replicas agree on which reservations are abandoned
  reserved_at timestamptz not null default now(),
  completed_at timestamptz,
  check ((status = 1) = (completed_at is not null))
);

create unique index generations_request on generations (account_id, request_id) where request_id is not null;
create index generations_account on generations (account_id, completed_at desc, id desc) where status = 1;
create index generations_running on generations (reserved_at) where status = 0;
