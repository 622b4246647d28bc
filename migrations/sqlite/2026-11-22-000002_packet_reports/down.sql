DROP TABLE sync_packets_in;
