-- Accounts own images, API keys, credits and generations. The default account owns
-- everything uploaded while authentication is not configured.
create table accounts (
  id uuid primary key default gen_random_uuid(),
  email text unique,
  username text not null,
  is_admin boolean not null default false,
  credit_balance bigint not null default 0 check (credit_balance >= 0),
  created_at timestamptz not null default now()
);

insert into accounts (id, email, username, is_admin)
values ('00000000-0000-4000-8000-000000000001', null, 'default', true);

-- One row per catalogue image. id is a time-ordered 64-bit snowflake. The blob itself lives
-- in the content-addressed blob store under its sha256.
create table images (
  id bigint primary key,
  owner_id uuid not null references accounts (id),
  sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  file_name text not null default '',
  media_type text not null,
  width integer not null check (width > 0),
  height integer not null check (height > 0),
  byte_size bigint not null check (byte_size > 0),
  blurhash text not null default '',
  phash bigint not null default 0,
  -- tags as written (namespaced ones such as bird:lovebird kept whole) ...
  tags text[] not null default '{}',
  -- ... and the normalised terms they match: each tag plus its namespace.
  tag_terms text[] not null default '{}',
  nsfw_level smallint not null default 0 check (nsfw_level between 0 and 3),
  post_id bigint,
  model_id bigint,
  model_version_id bigint,
  username text not null default '',
  meta jsonb,
  -- {"classes": {name: count}, "boxes": [{class_name, x, y, width, height, confidence?}]}
  annotations jsonb not null default '{}',
  -- 0 private (owner and admins only), 1 public
  visibility smallint not null default 0,
  -- 0 not indexed, 1 pending, 2 indexed, 3 failed
  index_status smallint not null default 0,
  index_error text not null default '',
  like_count integer not null default 0,
  heart_count integer not null default 0,
  laugh_count integer not null default 0,
  cry_count integer not null default 0,
  dislike_count integer not null default 0,
  reaction_count integer generated always as
    (like_count + heart_count + laugh_count + cry_count + dislike_count) stored,
  comment_count integer not null default 0,
  -- Last change of a counter: ranked page walks skip images re-ranked after the walk began,
  -- so no image is returned twice.
  stats_changed_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (owner_id, sha256)
);

create index images_tag_terms on images using gin (tag_terms);
create index images_created on images (created_at);
create index images_reactions on images (reaction_count desc, id desc);
create index images_comments on images (comment_count desc, id desc);
create index images_sha256 on images (sha256);
create index images_username on images (lower(username)) where username <> '';
create index images_classes on images using gin ((annotations -> 'classes'));
create index images_post on images (post_id) where post_id is not null;
create index images_model on images (model_id) where model_id is not null;
create index images_model_version on images (model_version_id) where model_version_id is not null;

-- One reaction of each kind per account per image; the counters on images follow these rows.
create table reactions (
  image_id bigint not null references images (id) on delete cascade,
  account_id uuid not null references accounts (id) on delete cascade,
  kind smallint not null,
  created_at timestamptz not null default now(),
  primary key (image_id, account_id, kind)
);

create table comments (
  id bigint primary key,
  image_id bigint not null references images (id) on delete cascade,
  account_id uuid not null references accounts (id),
  username text not null default '',
  body text not null,
  -- AIP-155 idempotency key of the AddComment call that made it
  request_id uuid,
  created_at timestamptz not null default now()
);

create index comments_image on comments (image_id, id);
create unique index comments_request on comments (account_id, request_id) where request_id is not null;

-- AIP-155 idempotency of uploads: a retried request_id returns the first result.
create table upload_requests (
  account_id uuid not null references accounts (id) on delete cascade,
  request_id uuid not null,
  image_id bigint not null references images (id) on delete cascade,
  deduplicated boolean not null,
  created_at timestamptz not null default now(),
  primary key (account_id, request_id)
);

-- Each process takes a worker number for its snowflake ids (modulo 1024).
create sequence snowflake_workers;
