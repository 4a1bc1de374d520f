-- Search answers an image's file name and tags from memory too (they are cheap and asked
-- for often), so changes to them are logged like the filtered attributes (see 0005).

drop trigger images_filter_log on images;

create trigger images_filter_log after update of
    owner_id, visibility, tags, tag_terms, file_name, nsfw_level, post_id, model_id,
    model_version_id, username, annotations, index_status, created_at
  on images for each row
  when (
    (old.owner_id, old.visibility, old.tags, old.file_name, old.nsfw_level, old.post_id, old.model_id,
      old.model_version_id, old.username, old.annotations -> 'classes', old.index_status, old.created_at)
    is distinct from
    (new.owner_id, new.visibility, new.tags, new.file_name, new.nsfw_level, new.post_id, new.model_id,
      new.model_version_id, new.username, new.annotations -> 'classes', new.index_status, new.created_at)
  )
  execute function images_filter_log();
