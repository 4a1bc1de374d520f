-- Claims on pending images, so that with several replicas each image is embedded by one of
-- them. An indexer claims a batch for a lease (database time) before embedding it and drops
-- its claims once the batch is stored; a replica that dies mid-batch leaves claims that lapse
-- when their lease ends, and another replica takes the images then. A table of its own rather
-- than a column of images: claiming must not touch the image rows that index_log follows.
create table index_claims (
  image_id bigint primary key references images (id) on delete cascade,
  -- random per indexer, for operators reading the table and for re-taking one's own claims
  claimed_by text not null,
  claimed_until timestamptz not null
);
