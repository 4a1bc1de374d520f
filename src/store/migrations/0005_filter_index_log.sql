-- The search filter index (the attributes searches filter on, held in memory beside the
-- vectors) follows `index_log` exactly as the vectors do: a change to any of those attributes
-- of an image that has a vector is logged in the same transaction, by trigger, so no code path
-- can change them without the index hearing of it.
--
-- op 3: the image's filter attributes changed (the entry carries no model: every index
-- re-reads the image's current row when it applies the entry).

alter table index_log drop constraint index_log_op_check;
alter table index_log add constraint index_log_op_check check (op in (1, 2, 3));

create function images_filter_log() returns trigger language plpgsql as $$
declare
  last bigint;
begin
  -- Images without a vector are not in any index; their attributes are read when the vector
  -- arrives (op 1).
  if not exists (select 1 from embeddings where image_id = new.id) then
    return null;
  end if;
  perform pg_advisory_xact_lock(7305804365632845665);
  insert into index_log (image_id, op, model_id) values (new.id, 3, '') returning seq into last;
  perform pg_notify('glimpse_index_log', last::text);
  return null;
end
$$;

-- Only the columns the filter index holds; reactions, comments, meta and file names do not
-- log (meta equality and free text are answered by PostgreSQL).
create trigger images_filter_log after update of
    owner_id, visibility, tag_terms, nsfw_level, post_id, model_id, model_version_id,
    username, annotations, index_status, created_at
  on images for each row
  when (
    (old.owner_id, old.visibility, old.tag_terms, old.nsfw_level, old.post_id, old.model_id,
      old.model_version_id, old.username, old.annotations -> 'classes', old.index_status, old.created_at)
    is distinct from
    (new.owner_id, new.visibility, new.tag_terms, new.nsfw_level, new.post_id, new.model_id,
      new.model_version_id, new.username, new.annotations -> 'classes', new.index_status, new.created_at)
  )
  execute function images_filter_log();
