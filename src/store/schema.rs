// Written by hand to stay portable: only types SQLite and PostgreSQL share.

diesel::table! {
    server_state (id) {
        id -> Integer,
        server_node_id -> Text,
        code -> Text,
        last_seq -> BigInt,
        created_at -> Text,
    }
}

diesel::table! {
    sync_nodes (id) {
        id -> Text,
        code -> Text,
        name -> Text,
        description -> Nullable<Text>,
        token_hash -> Text,
        active -> Bool,
        created_at -> Text,
        last_sync_in -> Nullable<Text>,
        last_sync_out -> Nullable<Text>,
        received_packet_no -> BigInt,
        sent_packet_no -> BigInt,
        acked_packet_no -> BigInt,
        acked_seq -> BigInt,
        registered_seq -> BigInt,
        types -> Nullable<Text>,
        last_device -> Nullable<Text>,
    }
}

diesel::table! {
    entities (entity_type, entity_uuid) {
        entity_type -> Text,
        entity_uuid -> Text,
        data -> Text,
        version -> BigInt,
        updated_at -> Text,
        is_deleted -> Bool,
        author_node_id -> Nullable<Text>,
        holder_node_id -> Nullable<Text>,
        seq -> BigInt,
        created_seq -> BigInt,
        change_id -> Nullable<Text>,
        applied_at -> Text,
        field_versions -> Nullable<Text>,
        scope -> Nullable<Text>,
    }
}

diesel::table! {
    sync_changes (node_id, entity_type, entity_uuid) {
        node_id -> Text,
        entity_type -> Text,
        entity_uuid -> Text,
        seq -> BigInt,
        created_at -> Text,
    }
}

diesel::table! {
    sync_packets_out (node_id, packet_no) {
        node_id -> Text,
        packet_no -> BigInt,
        high_seq -> BigInt,
        change_count -> BigInt,
        created_at -> Text,
    }
}

diesel::table! {
    sync_packets_in (node_id, packet_no) {
        node_id -> Text,
        packet_no -> BigInt,
        report -> Text,
        created_at -> Text,
    }
}

diesel::table! {
    object_version_history (id) {
        id -> Text,
        seq -> BigInt,
        entity_uuid -> Text,
        entity_type -> Text,
        source_node_id -> Nullable<Text>,
        node_id -> Nullable<Text>,
        change_id -> Nullable<Text>,
        arrival_time -> Text,
        serialized_data -> Text,
        conflict_resolution -> Text,
        server_version -> BigInt,
        resolved_at -> Nullable<Text>,
        resolved_by -> Nullable<Text>,
    }
}

diesel::table! {
    node_scopes (node_id, scope) {
        node_id -> Text,
        scope -> Text,
        acked_seq -> BigInt,
        since_seq -> BigInt,
        since_packet -> BigInt,
    }
}

diesel::table! {
    node_scope_losses (node_id, scope) {
        node_id -> Text,
        scope -> Text,
        cursor_seq -> BigInt,
        loss_seq -> BigInt,
        acked_at_loss -> BigInt,
        since_packet -> BigInt,
    }
}

diesel::table! {
    scope_exits (scope, seq) {
        scope -> Text,
        seq -> BigInt,
        entity_type -> Text,
        entity_uuid -> Text,
        created_at -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    node_scopes,
    node_scope_losses,
    scope_exits,
    server_state,
    sync_nodes,
    entities,
    sync_changes,
    sync_packets_out,
    sync_packets_in,
    object_version_history,
);

diesel::table! {
    watermelon_pulls (mark) {
        mark -> BigInt,
        node_id -> Text,
        snapshot_seq -> BigInt,
        created_at -> Text,
    }
}

diesel::table! {
    watermelon_created (entity_type, entity_uuid) {
        entity_type -> Text,
        entity_uuid -> Text,
        pull_mark -> BigInt,
    }
}

diesel::table! {
    push_rows (node_id, row_id) {
        node_id -> Text,
        row_id -> Text,
        entity_type -> Text,
        entity_uuid -> Text,
        created_at -> Text,
    }
}

diesel::table! {
    time_cursors (at) {
        at -> Text,
        seq -> BigInt,
    }
}
