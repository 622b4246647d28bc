DROP TABLE push_rows;
