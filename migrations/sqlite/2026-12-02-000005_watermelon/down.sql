DROP INDEX entities_type_seq;
DROP TABLE watermelon_created;
DROP TABLE watermelon_pulls;
