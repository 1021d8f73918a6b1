// Package compose turns docker-compose files into the StackSpec that
// `skiff stack deploy` sends to a manager.
//
// Loading is compose-go's: it reads every file given with -c (later files
// override earlier ones, as `docker compose` merges them), interpolates
// ${VARIABLES} from the environment and the .env file of the working
// directory, validates against the Compose Specification schema (which
// accepts the 2.x and 3.x formats as well as unversioned files), applies
// extends and include, and resolves env_file into environment.
//
// This package then converts the loaded project the way `docker stack deploy`
// does: services and networks are named <stack>_<name>, services that list no
// networks join <stack>_default, and everything Swarm honours is mapped. It
// also honours what Swarm ignores and compose users rely on: links (DNS
// aliases), depends_on (start order and conditions), restart: as a fallback
// for deploy.restart_policy, and the v2-style mem_limit, mem_reservation,
// cpus, pids_limit and scale as fallbacks for their deploy counterparts.
//
// A deploy is never silently wrong. Every key skiff does not honour yields a
// Warning naming it; a file skiff cannot run as written (build without
// image, a global service with replicas, an external network, two services
// publishing the same port, ...) is an error that says what to change. The
// check for unhonoured keys is derived from compose-go's own types (see
// warnings.go), so a key that a newer compose-go learns is reported rather
// than dropped.
//
// Errors and warnings carry the file and line of the offending key whenever
// it can be found in the files as written.
package compose
