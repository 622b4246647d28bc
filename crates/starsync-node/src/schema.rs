//! Diesel schema of the node's local database (`migrations/node/`), written by hand.

diesel::table! {
    node_config (id) {
        id -> BigInt,
        server_url -> Text,
        node_id -> Text,
        auth_token -> Text,
        server_node_id -> Text,
        server_code -> Text,
        code -> Text,
        name -> Text,
        schema_version -> Text,
        packet_timeout -> BigInt,
        max_retries -> BigInt,
        batch_size -> BigInt,
        max_packet_bytes -> BigInt,
        created_at -> Text,
        ca_cert -> Nullable<Text>,
    }
}

diesel::table! {
    node_state (id) {
        id -> BigInt,
        sent_packet_no -> BigInt,
        server_acked_packet_no -> BigInt,
        received_packet_no -> BigInt,
        last_attempt_at -> Nullable<Text>,
        last_success_at -> Nullable<Text>,
        last_error -> Nullable<Text>,
        last_error_at -> Nullable<Text>,
        last_export_at -> Nullable<Text>,
        last_import_at -> Nullable<Text>,
    }
}

diesel::table! {
    local_entities (entity_type, entity_uuid) {
        entity_type -> Text,
        entity_uuid -> Text,
        data -> Text,
        deleted -> Bool,
        server_version -> BigInt,
        server_known -> Bool,
        server_data -> Nullable<Text>,
        updated_at -> Text,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        change_id -> Text,
        entity_type -> Text,
        entity_uuid -> Text,
        operation -> Text,
        base_version -> BigInt,
        data -> Nullable<Text>,
        updated_at -> Text,
        created_at -> Text,
        state -> Text,
        packet_no -> Nullable<BigInt>,
        error -> Nullable<Text>,
        error_reason -> Nullable<Text>,
    }
}

diesel::table! {
    packets_out (packet_no) {
        packet_no -> BigInt,
        bytes -> Binary,
        change_count -> BigInt,
        ack_packet_no -> BigInt,
        created_at -> Text,
        send_count -> BigInt,
        last_sent_at -> Nullable<Text>,
    }
}

diesel::table! {
    conflicts (conflict_id) {
        conflict_id -> Text,
        entity_type -> Text,
        entity_uuid -> Text,
        change_id -> Text,
        resolution -> Text,
        conflict_resolution -> Text,
        server_version -> BigInt,
        local_data -> Nullable<Text>,
        reported_at -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    node_config,
    node_state,
    local_entities,
    outbox,
    packets_out,
    conflicts,
);
