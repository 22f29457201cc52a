//! Bad input tried as a new user would, one row per mistake: the exit
//! status and the words of the message. The README's troubleshooting table is made
//! from [`ROWS`] and checked against it, so the table and the tests cannot
//! drift apart. (`bad_input.rs` covers further cases in more depth.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// One mistake: what a user types and what walplayer answers.
struct Row {
    /// The command it belongs to (a section of the table).
    group: &'static str,
    /// The kind of mistake.
    input: &'static str,
    /// What the user types, as the table shows it.
    example: &'static str,
    /// The same with this test's paths: `{name}` placeholders, see [`Fixture::arg`].
    args: &'static str,
    exit: i32,
    /// What the table says walplayer says.
    says: &'static str,
    /// Words stderr must hold.
    needles: &'static [&'static str],
    todo: &'static str,
}

#[allow(clippy::too_many_arguments)]
const fn row(
    group: &'static str,
    input: &'static str,
    example: &'static str,
    args: &'static str,
    exit: i32,
    says: &'static str,
    needles: &'static [&'static str],
    todo: &'static str,
) -> Row {
    Row {
        group,
        input,
        example,
        args,
        exit,
        says,
        needles,
        todo,
    }
}

/// YAML configuration files the rows name as `{yaml:NAME}`.
const YAML: &[(&str, &[u8])] = &[
    ("list-name", b"client:\n  cluster_name: [a]\n"),
    (
        "number-address",
        b"client:\n  cluster_name: x\n  wal:\n    address: 52000\n",
    ),
    (
        "string-wal",
        b"client:\n  cluster_name: x\n  wal: \"string\"\n",
    ),
    ("top-list", b"- client\n- wal\n"),
    ("not-utf8", b"client:\n  cluster_name: \xff\xfe\n"),
];

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // generate
    row("generate", "wrong type", "walplayer generate ./wal --length abc", "walplayer generate {out} --length abc", 2,
        "invalid value 'abc' for '--length <LENGTH>': invalid digit found in string", &["invalid value 'abc'", "--length"],
        "give a whole number of files"),
    row("generate", "wrong type", "walplayer generate ./wal --length 1 --wal-size 1.5", "walplayer generate {out} --length 1 --wal-size 1.5", 2,
        "invalid value '1.5' for '--wal-size <MB>'", &["'1.5'", "--wal-size"],
        "sizes are whole MB: 1, 2, 4 ... 1024"),
    row("generate", "negative number", "walplayer generate ./wal --length 1 --wal-size -1", "walplayer generate {out} --length 1 --wal-size -1", 2,
        "unexpected argument '-1' found", &["unexpected argument '-1'"],
        "sizes are positive"),
    row("generate", "zero", "walplayer generate ./wal --length 0", "walplayer generate {out} --length 0", 2,
        "invalid value '0' for '--length <LENGTH>': 0 is not in 1..", &["invalid value '0'", "--length"],
        "ask for at least one file"),
    row("generate", "out of range", "walplayer generate ./wal --length 1 --wal-size 3", "walplayer generate {out} --length 1 --wal-size 3", 2,
        "--wal-size: WAL segment size 3 MB is not one PostgreSQL accepts: use 1, 2, 4, ... or 1024", &["--wal-size", "1, 2, 4"],
        "a power of two from 1 to 1024, as initdb --wal-segsize takes"),
    row("generate", "huge", "walplayer generate ./wal --length 18446744073709551615 --wal-size 1", "walplayer generate {out} --length 18446744073709551615 --wal-size 1", 2,
        "18446744073709551615 segments of 1048576 bytes from LSN 0/0 run past the largest LSN", &["run past the largest LSN"],
        "fewer files, or an earlier --start-lsn"),
    row("generate", "too large for the type", "walplayer generate ./wal --length 18446744073709551616", "walplayer generate {out} --length 18446744073709551616", 2,
        "number too large to fit in target type", &["too large"],
        "fewer files"),
    row("generate", "out of range", "walplayer generate ./wal --length 1 --timeline 0", "walplayer generate {out} --length 1 --timeline 0", 2,
        "invalid value '0' for '--timeline <TIMELINE>': 0 is not in 1..=4294967295", &["--timeline", "0 is not in 1.."],
        "timelines start at 1"),
    row("generate", "wrong type", "walplayer generate ./wal --length 1 --start-lsn zz", "walplayer generate {out} --length 1 --start-lsn zz", 2,
        "\"zz\" is not an LSN: write it as PostgreSQL does, e.g. 0/0 or 16/B374D848", &["is not an LSN", "0/0"],
        "write the LSN as PostgreSQL prints it"),
    row("generate", "unknown value", "walplayer generate ./wal --length 1 --pg-version 14", "walplayer generate {out} --length 1 --pg-version 14", 2,
        "invalid value '14' for '--pg-version' [possible values: 15, 16, 17]", &["possible values: 15, 16, 17"],
        "one of the versions listed"),
    row("generate", "missing file", "walplayer generate ./wal --length 1 --template ./nope", "walplayer generate {out} --length 1 --wal-size 1 --template {missing}", 2,
        "cannot read WAL template ./nope: No such file or directory", &["cannot read WAL template", "No such file or directory"],
        "name one of your real WAL segments"),
    row("generate", "directory for a file", "walplayer generate ./wal --length 1 --template /var/lib/postgresql", "walplayer generate {out} --length 1 --wal-size 1 --template {dir}", 2,
        "cannot read WAL template DIR: Is a directory", &["cannot read WAL template", "Is a directory"],
        "name a segment inside pg_wal, not the directory"),
    row("generate", "empty file", "walplayer generate ./wal --length 1 --template ./empty", "walplayer generate {out} --length 1 --wal-size 1 --template {emptyfile}", 2,
        "WAL template ./empty is empty", &["WAL template", "is empty"],
        "name a complete segment"),
    row("generate", "file for a directory", "walplayer generate ./notes.txt --length 1", "walplayer generate {file} --length 1 --wal-size 1", 2,
        "generate DIR ./notes.txt is a file, not a directory: give a directory (it is created if missing)", &["is a file, not a directory"],
        "give a directory"),
    row("generate", "directory under a file", "walplayer generate ./notes.txt/wal --length 1", "walplayer generate {file}/wal --length 1 --wal-size 1", 2,
        "cannot create directory ./notes.txt/wal: Not a directory", &["cannot create directory", "Not a directory"],
        "give a path whose parents are directories"),
    // play
    row("play", "wrong type", "walplayer play ./wal --jobs abc", "walplayer play {wal} {klio} --jobs abc", 2,
        "invalid value 'abc' for '--jobs <JOBS>': invalid digit found in string", &["invalid value 'abc'", "--jobs"],
        "a whole number from 1 to 1024"),
    row("play", "out of range", "walplayer play ./wal --jobs 1025", "walplayer play {wal} {klio} --jobs 1025", 2,
        "invalid value '1025' for '--jobs <JOBS>': 1025 is not in 1..=1024", &["1025 is not in 1..=1024"],
        "at most 1024 parallel uploads"),
    row("play", "wrong type", "walplayer play ./wal --block-size 1.5", "walplayer play {wal} {klio} --block-size 1.5", 2,
        "invalid value '1.5' for '--block-size <KIB>'", &["'1.5'", "--block-size"],
        "whole KiB from 1 to 8192"),
    row("play", "out of range", "walplayer play ./wal --retries 101", "walplayer play {wal} {klio} --retries 101", 2,
        "invalid value '101' for '--retries <N>': 101 is not in 0..=100", &["101 is not in 0..=100"],
        "0 to 100 further attempts"),
    row("play", "no unit", "walplayer play ./wal --timeout 5", "walplayer play {wal} {klio} --timeout 5", 2,
        "\"5\" is not a duration (time unit needed ...); write e.g. 30s, 5m or 500ms", &["is not a duration", "30s"],
        "add the unit: 5s, 5m"),
    row("play", "directory for a file", "walplayer play ./wal --config ./certs", "walplayer play {wal} --config {dir}", 2,
        "cannot read configuration file ./certs: Is a directory", &["cannot read configuration file", "Is a directory"],
        "name the YAML file, e.g. ./certs/klio-config.yaml"),
    row("play", "unreadable file", "walplayer play ./wal --config ./klio.yaml (mode 000)", "walplayer play {wal} --config {unreadable}", 2,
        "cannot read configuration file ./klio.yaml: Permission denied", &["cannot read configuration file", "Permission denied"],
        "make it readable by the user running walplayer"),
    row("play", "YAML wrong type", "`cluster_name: [a]`", "walplayer play {wal} --config {yaml:list-name}", 2,
        "configuration file F: key client.cluster_name must be a string, found a list", &["client.cluster_name must be a string, found a list"],
        "write the value as a string"),
    row("play", "YAML wrong type", "`address: 52000`", "walplayer play {wal} --config {yaml:number-address} --server-cert {ca} --client-cert {cert} --client-key {key}", 2,
        "client.wal.address \"52000\" has no port: write it as host:port, e.g. 127.0.0.1:52000", &["\"52000\" has no port", "host:port"],
        "host and port: `address: klio.example:52000`"),
    row("play", "YAML wrong type", "`wal: \"string\"`", "walplayer play {wal} --config {yaml:string-wal}", 2,
        "configuration file F: client.wal must be a mapping of settings (as in `client:` then `  wal:` on the next lines), found a string", &["client.wal must be a mapping", "found a string"],
        "indent address and the paths under `wal:`"),
    row("play", "YAML wrong type", "`- client` (a list, not `client:`)", "walplayer play {wal} --config {yaml:top-list}", 2,
        "configuration file F: the top level must be a mapping of settings ..., found a list", &["the top level must be a mapping", "found a list"],
        "start the file with `client:`"),
    row("play", "YAML not text", "`cluster_name: \\xff\\xfe` (not UTF-8)", "walplayer play {wal} --config {yaml:not-utf8}", 2,
        "cannot read configuration file F: stream did not contain valid UTF-8", &["cannot read configuration file", "valid UTF-8"],
        "save the file as UTF-8"),
    row("play", "missing file", "walplayer play ./wal --client-cert ./nope.crt", "walplayer play {wal} {klio} --client-cert {missing}", 2,
        "cannot read client certificate (client_cert_path) ./nope.crt: No such file or directory", &["client certificate (client_cert_path)", "No such file or directory"],
        "fix the path (flag, CLIENT_WAL_CLIENT_CERT_PATH or the file)"),
    row("play", "directory for a file", "walplayer play ./wal --client-key ./certs/client", "walplayer play {wal} {klio} --client-key {dir}", 2,
        "cannot read client key (client_key_path) ./certs/client: Is a directory", &["client key (client_key_path)", "Is a directory"],
        "name the key file, e.g. ./certs/client/tls.key"),
    row("play", "not PEM", "walplayer play ./wal --server-cert ./notes.txt", "walplayer play {wal} {klio} --server-cert {file}", 2,
        "server CA certificate (server_cert_path) ./notes.txt holds no PEM certificate", &["server CA certificate", "holds no PEM certificate"],
        "name the CA certificate, ca.crt"),
    row("play", "directory for a file", "walplayer play ./wal --output ./results", "walplayer play {wal} {klio} --output {dir}", 2,
        "cannot create --output file ./results: Is a directory", &["cannot create --output file", "Is a directory"],
        "name a file, e.g. ./results/results.json"),
    row("play", "directory for a file", "walplayer play ./wal --summary ./results", "walplayer play {wal} {klio} --summary {dir}", 2,
        "cannot create --summary file ./results: Is a directory", &["cannot create --summary file", "Is a directory"],
        "name a file, e.g. ./results/summary.json"),
    row("play", "missing directory", "walplayer play ./wal --output ./nope/results.json", "walplayer play {wal} {klio} --output {missing}/results.json", 2,
        "cannot create --output file ./nope/results.json: No such file or directory", &["cannot create --output file", "No such file or directory"],
        "create the directory first"),
    row("play", "path separator", "walplayer play ./wal --cluster-name a/b", "walplayer play {wal} {klio} --cluster-name a/b", 2,
        "client.cluster_name: cluster name \"a/b\" may contain only letters, digits, '_', '-' and '.'", &["client.cluster_name", "\"a/b\" may contain only"],
        "a name Klio accepts: a-b"),
    row("play", "out of range", "walplayer play ./wal --address 127.0.0.1:99999", "walplayer play {wal} --config {config} --address 127.0.0.1:99999", 2,
        "client.wal.address \"127.0.0.1:99999\" has no valid port", &["has no valid port"],
        "ports go up to 65535"),
    row("play", "empty directory", "walplayer play ./empty", "walplayer play {empty} {klio}", 0,
        "no WAL files in ./empty: nothing to send; 0 files stored, 0 failed, 0 skipped", &["no WAL files in", "nothing to send", "0 files stored, 0 failed, 0 skipped"],
        "check the path: generate or copy WAL into it"),
    row("play", "no WAL names", "walplayer play ./notes (only notes.txt)", "walplayer play {nonwal} {klio}", 0,
        "skipping ./notes/notes.txt: not a WAL file name; no WAL files in ./notes: nothing to send; 0 files stored, 0 failed, 1 skipped", &["not a WAL file name", "nothing to send", "1 skipped"],
        "files must carry PostgreSQL WAL names (optionally .gz)"),
    row("play", "zero size", "walplayer play ./zero (one empty WAL file)", "walplayer play {zero} {klio}", 1,
        "file is empty: Klio needs a non-zero segment_size, nothing was sent; 1 failed", &["file is empty", "1 failed"],
        "the file was truncated: copy it again from pg_wal or the archive"),
    // sink
    row("sink", "address in use", "walplayer sink --listen 127.0.0.1:52000 (taken)", "walplayer sink --listen {busy} --discard --tls-cert {scert} --tls-key {skey} --client-ca {sca}", 2,
        "cannot listen on 127.0.0.1:52000: Address already in use", &["cannot listen on", "Address already in use"],
        "stop the other server or pick another port (port 0 picks a free one)"),
    row("sink", "not an address", "walplayer sink --listen localhost", "walplayer sink --listen localhost --discard --tls-cert {scert} --tls-key {skey} --client-ca {sca}", 2,
        "invalid value 'localhost' for '--listen <LISTEN>': invalid socket address syntax", &["invalid socket address syntax"],
        "an IP and a port: 127.0.0.1:52000 or 0.0.0.0:52000"),
    row("sink", "directory for a file", "walplayer sink --tls-cert ./certs/server ...", "walplayer sink --listen 127.0.0.1:0 --discard --tls-cert {dir} --tls-key {skey} --client-ca {sca}", 2,
        "cannot read server certificate ./certs/server: Is a directory", &["cannot read server certificate", "Is a directory"],
        "name the file: ./certs/server/tls.crt"),
    row("sink", "missing file", "walplayer sink --tls-key ./nope.key ...", "walplayer sink --listen 127.0.0.1:0 --discard --tls-cert {scert} --tls-key {missing} --client-ca {sca}", 2,
        "cannot read server key ./nope.key: No such file or directory", &["cannot read server key", "No such file or directory"],
        "fix the path; `walplayer certs DIR` writes server/tls.key"),
    row("sink", "not PEM", "walplayer sink --client-ca ./notes.txt ...", "walplayer sink --listen 127.0.0.1:0 --discard --tls-cert {scert} --tls-key {skey} --client-ca {file}", 2,
        "client CA certificate ./notes.txt holds no PEM certificate", &["client CA certificate", "holds no PEM certificate"],
        "name the CA that signed the clients' certificates"),
    row("sink", "file for a directory", "walplayer sink --data ./notes.txt ...", "walplayer sink --listen 127.0.0.1:0 --data {file} --tls-cert {scert} --tls-key {skey} --client-ca {sca}", 2,
        "--data ./notes.txt is a file, not a directory: give a directory (it is created if missing)", &["--data", "is a file, not a directory"],
        "give a directory"),
    row("sink", "unknown value", "walplayer sink --fsync sometimes ...", "walplayer sink --listen 127.0.0.1:0 --discard --fsync sometimes --tls-cert {scert} --tls-key {skey} --client-ca {sca}", 2,
        "invalid value 'sometimes' for '--fsync <FSYNC>' [possible values: block, none]", &["possible values: block, none"],
        "block (like Klio) or none"),
    // certs
    row("certs", "existing files", "walplayer certs ./certs (again)", "walplayer certs {certs}", 2,
        "./certs/ca/tls.crt already exists; pass --force to overwrite it", &["already exists", "--force"],
        "keep them, or --force to mint new ones (clients then need the new CA)"),
    row("certs", "empty value", "walplayer certs ./certs --hosts ''", "walplayer certs {out} --hosts {nothing}", 2,
        "invalid certificate spec: host \"\" is neither an IP address nor a DNS name", &["host \"\" is neither an IP address nor a DNS name"],
        "list the names clients dial: --hosts klio.example.com,10.0.0.5"),
    row("certs", "path separator", "walplayer certs ./certs --cluster a/b", "walplayer certs {out} --cluster a/b", 2,
        "invalid certificate spec: cluster \"a/b\" must be non-empty and use only letters, digits, '_', '-' and '.'", &["cluster \"a/b\" must be non-empty"],
        "a name Klio accepts: a-b"),
    row("certs", "not an address", "walplayer certs ./certs --address klio", "walplayer certs {out} --address klio", 2,
        "--address: client.wal.address \"klio\" has no port: write it as host:port", &["--address", "has no port"],
        "host and port: klio:52000"),
    row("certs", "file for a directory", "walplayer certs ./notes.txt", "walplayer certs {file}", 2,
        "certs DIR ./notes.txt is a file, not a directory", &["is a file, not a directory"],
        "give a directory"),
    // coordinator
    row("coordinator", "zero", "walplayer coordinator --agents 0 --length 8", "walplayer coordinator --listen 127.0.0.1:0 --agents 0 --length 8", 2,
        "invalid value '0' for '--agents <AGENTS>': 0 is not in 1..=100000", &["0 is not in 1..=100000"],
        "at least one agent"),
    row("coordinator", "wrong type", "walplayer coordinator --agents abc --length 8", "walplayer coordinator --listen 127.0.0.1:0 --agents abc --length 8", 2,
        "invalid value 'abc' for '--agents <AGENTS>'", &["invalid value 'abc'", "--agents"],
        "a whole number"),
    row("coordinator", "zero", "walplayer coordinator --agents 1 --length 0", "walplayer coordinator --listen 127.0.0.1:0 --agents 1 --length 0", 2,
        "a run of zero files measures nothing: give --length or --length-per-agent of at least 1", &["zero files measures nothing"],
        "ask for at least one file"),
    row("coordinator", "zero", "walplayer coordinator --agents 1 --length 8 --clusters-per-agent 0", "walplayer coordinator --listen 127.0.0.1:0 --agents 1 --length 8 --clusters-per-agent 0", 2,
        "0 is not in 1..=1000", &["--clusters-per-agent", "0 is not in 1..=1000"],
        "1 to 1000"),
    row("coordinator", "out of range", "walplayer coordinator --agents 1 --length 8 --wal-size 2048", "walplayer coordinator --listen 127.0.0.1:0 --agents 1 --length 8 --wal-size 2048", 2,
        "--wal-size: WAL segment size 2048 MB is not one PostgreSQL accepts", &["--wal-size", "1, 2, 4"],
        "a power of two from 1 to 1024"),
    row("coordinator", "missing flag", "walplayer coordinator --agents 1", "walplayer coordinator --listen 127.0.0.1:0 --agents 1", 2,
        "--source generate needs --length (files in total) or --length-per-agent", &["needs --length"],
        "say how many files"),
    row("coordinator", "flags that do not go together", "walplayer coordinator --agents 1 --source dir --length 8", "walplayer coordinator --listen 127.0.0.1:0 --agents 1 --source dir --length 8", 2,
        "--length and --length-per-agent apply to --source generate", &["apply to --source generate"],
        "drop --length: a directory run plays the files it finds"),
    row("coordinator", "zero", "walplayer coordinator --agents 1 --length 8 --register-timeout 0s", "walplayer coordinator --listen 127.0.0.1:0 --agents 1 --length 8 --register-timeout 0s", 2,
        "a duration of zero would fail everything; give e.g. 30s", &["duration of zero"],
        "a duration: 30s, 2m"),
    row("coordinator", "address in use", "walplayer coordinator --listen 127.0.0.1:52100 (taken)", "walplayer coordinator --listen {busy} --agents 1 --length 8", 2,
        "cannot listen on 127.0.0.1:52100: Address already in use", &["cannot listen on", "Address already in use"],
        "stop the other coordinator or pick another port"),
    row("coordinator", "directory for a file", "walplayer coordinator --agents 1 --length 8 --output ./results", "walplayer coordinator --listen 127.0.0.1:0 --agents 1 --length 8 --output {dir}", 2,
        "cannot create --output file ./results: Is a directory", &["cannot create --output file", "Is a directory"],
        "name a file"),
    row("coordinator", "directory for a file", "walplayer coordinator ... --tls-cert ./certs/coordinator --tls-key ... --client-ca ...", "walplayer coordinator --listen 127.0.0.1:0 --agents 1 --length 8 --tls-cert {dir} --tls-key {ckey} --client-ca {cca}", 2,
        "cannot read server certificate ./certs/coordinator: Is a directory", &["cannot read server certificate", "Is a directory"],
        "name the file: ./certs/coordinator/tls.crt"),
    row("coordinator", "missing flag", "walplayer coordinator --agents 1 --length 8 --tls-cert ./c.crt", "walplayer coordinator --listen 127.0.0.1:0 --agents 1 --length 8 --tls-cert {ccert}", 2,
        "the following required arguments were not provided: --tls-key --client-ca", &["required arguments were not provided", "--tls-key", "--client-ca"],
        "give all three TLS flags, or none"),
    row("coordinator", "not an address", "walplayer coordinator --agents 1 --length 8 --address klio", "walplayer coordinator --listen 127.0.0.1:0 --agents 1 --length 8 --address klio", 2,
        "--address: client.wal.address \"klio\" has no port", &["--address", "has no port"],
        "host and port: klio:52000"),
    // walplayer-agent
    row("walplayer-agent", "empty value", "walplayer-agent --coordinator HOST:52100 --name ''", "walplayer-agent --coordinator 127.0.0.1:1 --data-dir {out} --name {nothing} --once", 2,
        "agent name: cluster name is empty", &["agent name", "empty"],
        "a name, or leave --name out to use the host name"),
    row("walplayer-agent", "path separator", "walplayer-agent --coordinator HOST:52100 --name a/b", "walplayer-agent --coordinator 127.0.0.1:1 --data-dir {out} --name a/b --once", 2,
        "agent name: cluster name \"a/b\" may contain only letters, digits, '_', '-' and '.'", &["agent name", "a/b"],
        "a-b"),
    row("walplayer-agent", "file for a directory", "walplayer-agent --coordinator HOST:52100 --data-dir ./notes.txt", "walplayer-agent --coordinator 127.0.0.1:1 --name a --data-dir {file} --once", 2,
        "--data-dir ./notes.txt is a file, not a directory", &["--data-dir", "is a file, not a directory"],
        "give a directory"),
    row("walplayer-agent", "zero", "walplayer-agent --coordinator HOST:52100 --max-jobs 0", "walplayer-agent --coordinator 127.0.0.1:1 --name a --data-dir {out} --max-jobs 0", 2,
        "invalid value '0' for '--max-jobs <MAX_JOBS>': 0 is not in 1..", &["invalid value '0'", "--max-jobs"],
        "a bound of at least 1 (the same holds for --max-files, --max-clusters, --max-generate-bytes)"),
    row("walplayer-agent", "wrong type", "walplayer-agent --coordinator HOST:52100 --max-jobs abc", "walplayer-agent --coordinator 127.0.0.1:1 --name a --data-dir {out} --max-jobs abc", 2,
        "invalid value 'abc' for '--max-jobs <MAX_JOBS>'", &["invalid value 'abc'", "--max-jobs"],
        "a whole number"),
    row("walplayer-agent", "not an address", "walplayer-agent --coordinator 52100", "walplayer-agent --coordinator 52100 --name a --data-dir {out} --once", 2,
        "--coordinator: client.wal.address \"52100\" has no port", &["--coordinator", "has no port"],
        "host and port of the coordinator: coord.example:52100"),
    row("walplayer-agent", "address in use", "walplayer-agent ... --health-listen 127.0.0.1:8081 (taken)", "walplayer-agent --coordinator 127.0.0.1:1 --name a --data-dir {out} {klio} --once --health-listen {busy}", 2,
        "cannot serve health on 127.0.0.1:8081: Address already in use", &["cannot serve health on", "Address already in use"],
        "another port"),
    row("walplayer-agent", "directory for a file", "walplayer-agent ... --config ./certs --once", "walplayer-agent --coordinator 127.0.0.1:1 --name a --data-dir {out} --config {dir} --once", 2,
        "cannot read configuration file ./certs: Is a directory", &["cannot read configuration file", "Is a directory"],
        "name the YAML file"),
    row("walplayer-agent", "directory for a file", "walplayer-agent ... --control-ca ./certs/agent --control-cert ... --control-key ...", "walplayer-agent --coordinator 127.0.0.1:1 --name a --data-dir {out} --control-ca {dir} --control-cert {acert} --control-key {akey} --once", 2,
        "cannot read coordinator CA certificate (--control-ca) ./certs/agent: Is a directory", &["coordinator CA certificate (--control-ca)", "Is a directory"],
        "name the file: ./certs/agent/ca.crt"),
    row("walplayer-agent", "not an address", "walplayer-agent ... --allow-address klio", "walplayer-agent --coordinator 127.0.0.1:1 --name a --data-dir {out} {klio} --once --allow-address klio", 2,
        "--allow-address: client.wal.address \"klio\" has no port", &["--allow-address", "has no port"],
        "host and port, as the coordinator's --address will say it"),
    // quickstart
    row("quickstart", "zero", "walplayer quickstart --files 0", "walplayer quickstart --files 0", 2,
        "invalid value '0' for '--files <FILES>': 0 is not in 1..=4096", &["0 is not in 1..=4096"],
        "1 to 4096 files"),
    row("quickstart", "out of range", "walplayer quickstart --agents 33", "walplayer quickstart --agents 33", 2,
        "invalid value '33' for '--agents <AGENTS>': 33 is not in 1..=32", &["33 is not in 1..=32"],
        "1 to 32 agents (a real fleet: coordinator and walplayer-agent)"),
    row("quickstart", "out of range", "walplayer quickstart --wal-size 3", "walplayer quickstart --wal-size 3", 2,
        "--wal-size: WAL segment size 3 MB is not one PostgreSQL accepts", &["--wal-size", "1, 2, 4"],
        "a power of two from 1 to 1024"),
    // The container check (tests/container) sees the read-only case itself;
    // here a missing --work-dir fails the same way.
    row("quickstart", "nowhere to write", "walplayer quickstart (in a container whose root file system is read-only)", "walplayer quickstart --work-dir {missing}", 2,
        "cannot create a temporary directory in /tmp (from the default, as TMPDIR is not set); give a writable directory with --work-dir DIR or the TMPDIR environment variable: Read-only file system (os error 30)",
        &["cannot create a temporary directory in", "give a writable directory with --work-dir DIR or the TMPDIR environment variable"],
        "`--work-dir` a writable volume with room for the files twice, such as an agent pod's `/data`"),
];

/// The files and servers the rows refer to, in one test directory.
struct Fixture {
    env: TestEnv,
    paths: BTreeMap<&'static str, PathBuf>,
    sink: SinkProcess,
    /// Held open so the port stays taken.
    busy: std::net::TcpListener,
    /// Why the unreadable-file row cannot be tried here, if it cannot.
    unreadable_skip: Option<String>,
}

impl Fixture {
    fn new() -> Fixture {
        let env = TestEnv::new();
        let wal = env.generate("wal", 1, 1, &[]);
        let sink = env.sink(&env.path("stored"), &[]);
        let mut paths = BTreeMap::new();
        let mk = |name: &str| {
            let p = env.path(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        paths.insert("wal", wal);
        paths.insert("empty", mk("empty"));
        paths.insert("dir", mk("a-directory"));
        let zero = mk("zero");
        std::fs::write(zero.join("000000010000000000000001"), b"").unwrap();
        paths.insert("zero", zero);
        let nonwal = mk("notes");
        std::fs::write(nonwal.join("notes.txt"), b"not WAL\n").unwrap();
        paths.insert("nonwal", nonwal);
        let file = env.path("notes.txt");
        std::fs::write(&file, b"not PEM, not YAML: notes\n").unwrap();
        paths.insert("file", file);
        let empty_file = env.path("empty-file");
        std::fs::write(&empty_file, b"").unwrap();
        paths.insert("emptyfile", empty_file);
        paths.insert("missing", env.path("no-such-file"));
        paths.insert("out", env.path("out"));
        paths.insert("certs", env.certs.dir.clone());
        paths.insert("config", env.certs.klio_config.clone());
        let c = &env.certs;
        for (name, path) in [
            ("ca", &c.client.ca),
            ("cert", &c.client.cert),
            ("key", &c.client.key),
            ("sca", &c.server.ca),
            ("scert", &c.server.cert),
            ("skey", &c.server.key),
            ("cca", &c.coordinator.ca),
            ("ccert", &c.coordinator.cert),
            ("ckey", &c.coordinator.key),
            ("acert", &c.agent.cert),
            ("akey", &c.agent.key),
        ] {
            paths.insert(name, path.clone());
        }
        let unreadable = env.path("unreadable.yaml");
        std::fs::copy(&env.certs.klio_config, &unreadable).unwrap();
        std::fs::set_permissions(
            &unreadable,
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
        // Root (CI containers) reads mode 000 files anyway.
        let unreadable_skip = std::fs::File::open(&unreadable).ok().map(|_| {
            "mode 000 does not stop this user from reading (running as root?)".to_string()
        });
        paths.insert("unreadable", unreadable);
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Fixture {
            env,
            paths,
            sink,
            busy,
            unreadable_skip,
        }
    }

    /// One word of a row's `args`, its placeholder filled in; `{klio}`
    /// gives the working configuration and the test sink's address.
    fn arg(&self, word: &str) -> Vec<String> {
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let mut out = Vec::new();
        let mut rest = word;
        let mut text = String::new();
        while let Some(start) = rest.find('{') {
            text.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed placeholder") + start;
            let name = &rest[start + 1..end];
            match name {
                "klio" => {
                    out.extend(["--config".into(), path(&self.paths["config"])]);
                    out.extend(["--address".into(), self.sink.address.clone()]);
                }
                "nothing" => {}
                "busy" => text.push_str(&self.busy.local_addr().unwrap().to_string()),
                _ => match name.strip_prefix("yaml:") {
                    Some(y) => text.push_str(&path(&self.env.path(&format!("{y}.yaml")))),
                    None => text.push_str(&path(
                        self.paths
                            .get(name)
                            .unwrap_or_else(|| panic!("unknown placeholder {{{name}}}")),
                    )),
                },
            }
            rest = &rest[end + 1..];
        }
        text.push_str(rest);
        if word != "{klio}" {
            out.push(text);
        }
        out
    }

    fn command(&self, row: &Row) -> Command {
        let mut words = row.args.split_whitespace();
        let mut cmd = match words.next() {
            Some("walplayer") => self.env.walplayer(&[]),
            Some("walplayer-agent") => {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_walplayer-agent"));
                cmd.env("HOME", self.env.dir.path())
                    .env_remove("RUST_LOG")
                    .env_remove("WALPLAYER_COORDINATOR")
                    .env_remove("WALPLAYER_AGENT_NAME");
                cmd
            }
            other => panic!("row {:?}: unknown binary {other:?}", row.example),
        };
        cmd.current_dir(self.env.dir.path());
        for word in words {
            cmd.args(self.arg(word));
        }
        cmd
    }
}

/// Runs a row; returns why it failed, naming the row.
fn check(fx: &Fixture, row: &Row) -> Option<String> {
    let out = run(&mut fx.command(row));
    let err = stderr(&out);
    let name = format!("[{}] {}: {}", row.group, row.input, row.example);
    let mut problems = Vec::new();
    if out.status.code() != Some(row.exit) {
        problems.push(format!(
            "exit {:?}, table says {}",
            out.status.code(),
            row.exit
        ));
    }
    for n in row.needles {
        if !err.contains(n) {
            problems.push(format!("stderr lacks {n:?}"));
        }
    }
    if err.contains("panicked") {
        problems.push("panicked".into());
    }
    // A cause is printed once ("Is a directory (os error 21)", not twice).
    if err.matches("(os error").count() > 1 {
        problems.push("an OS error is printed more than once".into());
    }
    (!problems.is_empty()).then(|| format!("{name}\n  {}\n  stderr: {err}", problems.join("\n  ")))
}

#[test]
fn every_row_of_the_troubleshooting_table() {
    let fx = Fixture::new();
    for (name, text) in YAML {
        std::fs::write(fx.env.path(&format!("{name}.yaml")), text).unwrap();
    }
    let mut failures = Vec::new();
    for row in ROWS {
        if row.args.contains("{unreadable}") {
            if let Some(why) = &fx.unreadable_skip {
                let line = format!("skipping row {:?}: {why}\n", row.example);
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                continue;
            }
        }
        failures.extend(check(&fx, row));
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows differ from the table:\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n")
    );
    assert!(!fx.sink.log_text().contains("panicked"));
}

/// The README's troubleshooting table, made from [`ROWS`].
fn table() -> String {
    let mut text = String::new();
    let mut group = "";
    for row in ROWS {
        if row.group != group {
            group = row.group;
            text.push_str(&format!(
                "\n### {group}\n\n| input | example | exit | what walplayer says | what to do |\n|---|---|---|---|---|\n"
            ));
        }
        // A note in parentheses stays outside the code span.
        let example = match row.example.split_once(" (") {
            _ if row.example.starts_with('`') => row.example.to_string(),
            Some((code, note)) => format!("`{code}` ({note}"),
            None => format!("`{}`", row.example),
        };
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.input,
            example.replace('|', "\\|"),
            row.exit,
            row.says.replace('|', "\\|"),
            row.todo
        ));
    }
    text
}

const BEGIN: &str = "<!-- table: made from tests/e2e/troubleshooting.rs -->\n";
const END: &str = "<!-- end of table -->";

/// The documented table is the tested one. To update it after changing
/// ROWS: `WALPLAYER_WRITE_TABLE=1 cargo test --test e2e troubleshooting`.
#[test]
fn the_documented_table_is_the_tested_one() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let (head, rest) = doc.split_once(BEGIN).expect("table start marker");
    let (documented, tail) = rest.split_once(END).expect("table end marker");
    let table = table();
    if std::env::var_os("WALPLAYER_WRITE_TABLE").is_some() {
        std::fs::write(&doc_path, format!("{head}{BEGIN}{table}{END}{tail}")).unwrap();
        return;
    }
    assert!(
        documented == table,
        "README.md's troubleshooting table differs from ROWS; rewrite it with WALPLAYER_WRITE_TABLE=1"
    );
}

/// A FIFO named as the configuration blocks in open(2) until something
/// writes to it, as `cat` would; the first Ctrl-C is acknowledged and the
/// second stops walplayer at once with 130.
#[test]
fn a_fifo_as_config_waits_and_two_ctrl_c_stop_it() {
    let env = TestEnv::new();
    let wal = env.generate("wal", 1, 1, &[]);
    let fifo = env.path("config.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut cmd = env.walplayer(&["play"]);
    cmd.arg(&wal).arg("--config").arg(&fifo);
    let mut logged = Logged::start(cmd, env.path("play.log"));
    // Let it reach the open(2) of the FIFO and its signal handler start.
    std::thread::sleep(std::time::Duration::from_millis(500));
    signal(&logged.child, libc::SIGINT);
    logged.wait_line(
        "Ctrl-C again stops at once",
        std::time::Duration::from_secs(10),
    );
    signal(&logged.child, libc::SIGINT);
    let status = logged.wait(std::time::Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", logged.text());
    assert!(!logged.text().contains("panicked"), "{}", logged.text());
}
