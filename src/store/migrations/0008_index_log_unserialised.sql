-- index_log writers no longer queue behind one advisory lock. The lock (0002, 0005) made
-- entries commit in `seq` order by holding every transaction that logs anything, from its
-- first entry to its commit, until the previous one committed: indexer batches, image
-- updates and deletes, on every replica, one at a time. Readers now take entries in any
-- commit order: each remembers the sequence numbers it passed without reading and re-reads
-- them until they commit or PostgreSQL shows that the transactions holding them have ended
-- (src/search/log-gaps.ts). The order in which they are applied does not matter: an entry
-- names an image, and the reader applies that image's vector and attributes as they are when
-- it reads the entry. Replicas of an earlier version still running when this applies read the
-- log in sequence order and may pass over an entry that commits late until they run this one.

create or replace function embeddings_log() returns trigger language plpgsql as $$
declare
  last bigint;
begin
  if tg_op = 'DELETE' then
    insert into index_log (image_id, op, model_id) values (old.image_id, 2, old.model_id)
      returning seq into last;
  else
    insert into index_log (image_id, op, model_id) values (new.image_id, 1, new.model_id)
      returning seq into last;
  end if;
  perform pg_notify('glimpse_index_log', last::text);
  return null;
end
$$;

create or replace function images_filter_log() returns trigger language plpgsql as $$
declare
  last bigint;
begin
  -- Images without a vector are not in any index; their attributes are read when the vector
  -- arrives (op 1).
  if not exists (select 1 from embeddings where image_id = new.id) then
    return null;
  end if;
  insert into index_log (image_id, op, model_id) values (new.id, 3, '') returning seq into last;
  perform pg_notify('glimpse_index_log', last::text);
  return null;
end
$$;
