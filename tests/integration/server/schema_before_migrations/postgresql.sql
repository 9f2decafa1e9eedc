-- The job store's schema as `metadata.create_all` made it before migrations existed (postgresql),
-- generated from server/queue/tables.py at commit 5704dff. The upgrade test starts from it.
CREATE TABLE job_events (
	id SERIAL NOT NULL, 
	owner VARCHAR(64) NOT NULL, 
	job_id VARCHAR(36) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	payload JSON NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_job_events_created ON job_events (created_at);

CREATE TABLE job_inputs (
	sha256 VARCHAR(64) NOT NULL, 
	data BYTEA NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (sha256)
);

CREATE TABLE jobs (
	seq SERIAL NOT NULL, 
	id VARCHAR(36) NOT NULL, 
	owner VARCHAR(64) NOT NULL, 
	model VARCHAR(128) NOT NULL, 
	media_type VARCHAR(16) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	params JSON NOT NULL, 
	input_sha256 VARCHAR(64) NOT NULL, 
	enqueued_at FLOAT NOT NULL, 
	started_at FLOAT, 
	completed_at FLOAT, 
	progress FLOAT NOT NULL, 
	stage VARCHAR(32), 
	attempts INTEGER NOT NULL, 
	worker_id VARCHAR(128), 
	lease_expires_at FLOAT, 
	result_path TEXT, 
	result_deleted_at FLOAT, 
	error_message TEXT, 
	info JSON, 
	PRIMARY KEY (seq), 
	UNIQUE (id)
);

CREATE INDEX ix_jobs_owner_started ON jobs (owner, started_at);

CREATE INDEX ix_jobs_owner_status ON jobs (owner, status);

CREATE INDEX ix_jobs_status_seq ON jobs (status, seq);

CREATE TABLE workers (
	id VARCHAR(128) NOT NULL, 
	device VARCHAR(32), 
	pid INTEGER, 
	ready BOOLEAN NOT NULL, 
	smoke_test BOOLEAN NOT NULL, 
	notice TEXT, 
	started_at FLOAT NOT NULL, 
	last_seen FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
