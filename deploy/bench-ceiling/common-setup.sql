-- Bench scaffolding, in every ceiling_ database after the service's migrations: UUIDv7 ids
-- (time-ordered, as the services' Uuid::now_v7 order ids, event ids and notification ids are),
-- which PostgreSQL 15 does not have built in. Not a service table; nothing of the schema changes.
CREATE FUNCTION ceiling_uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
