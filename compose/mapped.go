package compose

// The keys the converter maps, per kind of object. findUnmapped warns about
// every key set in a file that is not listed here, so a key may only be
// added once the converter honours it (or deliberately decides it needs no
// honouring, which the comment then says).

// projectKeys are the top-level keys. The others (secrets, configs, jobs,
// models, ...) are warned about once each.
var projectKeys = keySet{
	"name":     nil, // the stack name given on the command line wins, as in docker stack deploy
	"services": nil, // each checked against serviceKeys
	"networks": nil, // each used one checked against networkKeys
	"volumes":  nil, // each used one checked against volumeKeys
}

// updateKeys are deploy.update_config and deploy.rollback_config.
var updateKeys = keySet{
	"parallelism":       nil,
	"delay":             nil,
	"failure_action":    nil,
	"monitor":           nil,
	"max_failure_ratio": nil,
	"order":             nil,
}

// serviceKeys are the keys of one service.
var serviceKeys = keySet{
	"name":        nil, // compose-go's copy of the service's key
	"image":       nil,
	"build":       nil, // an error without image, a warning with it (service.go)
	"extends":     nil, // applied by the loader
	"command":     nil,
	"entrypoint":  nil,
	"environment": nil,
	"env_file":    nil, // folded into environment by the loader
	"working_dir": nil,
	"user":        nil,
	"hostname":    nil,
	"labels":      nil,
	"label_file":  nil, // folded into labels by the loader
	"volumes": keySet{
		"type":      nil,
		"source":    nil,
		"target":    nil,
		"read_only": nil,
		"bind":      keySet{"propagation": nil, "create_host_path": nil},
		"volume":    keySet{"nocopy": nil, "labels": nil},
		"tmpfs":     keySet{"size": nil, "mode": nil},
	},
	"tmpfs":             nil,
	"stop_signal":       nil,
	"stop_grace_period": nil,
	"healthcheck":       nil,
	"cap_add":           nil,
	"cap_drop":          nil,
	"sysctls":           nil,
	"ulimits":           nil,
	"init":              nil,
	"read_only":         nil,
	"tty":               nil,
	"stdin_open":        nil,
	"extra_hosts":       nil,
	"dns":               nil,
	"dns_search":        nil,
	"group_add":         nil,
	"shm_size":          nil,
	// expose only documents ports: on an overlay network every port of a
	// task is reachable by the other tasks already.
	"expose": nil,
	"ports": keySet{
		"name":      nil,
		"mode":      nil,
		"target":    nil,
		"published": nil,
		"protocol":  nil,
	},
	"networks": keySet{"aliases": nil},
	"links":    nil,
	// depends_on.*.restart is warned about where it matters (service.go).
	"depends_on": keySet{"condition": nil, "required": nil, "restart": nil},
	// restart: is the fallback for deploy.restart_policy (deploy.go).
	"restart": nil,
	// v2-style fallbacks for deploy.replicas and deploy.resources.
	"scale":           nil,
	"cpus":            nil,
	"mem_limit":       nil,
	"mem_reservation": nil,
	"pids_limit":      nil,
	"deploy": keySet{
		"mode":            nil,
		"replicas":        nil,
		"labels":          nil,
		"endpoint_mode":   nil,
		"update_config":   updateKeys,
		"rollback_config": updateKeys,
		"restart_policy":  nil,
		"resources": keySet{
			"limits":       keySet{"cpus": nil, "memory": nil, "pids": nil},
			"reservations": keySet{"cpus": nil, "memory": nil},
		},
		"placement": keySet{
			"constraints":           nil,
			"preferences":           keySet{"spread": nil},
			"max_replicas_per_node": nil,
		},
	},
}

// networkKeys are the keys of a top-level network.
var networkKeys = keySet{
	"name":       nil, // always <stack>_<key>; a different name is warned about (network.go)
	"driver":     nil, // only overlay; others are warned about (network.go)
	"external":   nil, // an error (network.go)
	"labels":     nil,
	"internal":   nil,
	"attachable": nil,
	"ipam":       keySet{"config": keySet{"subnet": nil}},
}

// volumeKeys are the keys of a top-level volume.
var volumeKeys = keySet{
	"name":        nil,
	"driver":      nil,
	"driver_opts": nil,
	"labels":      nil,
	"external":    nil, // the volume is then used by its name, unprefixed
}
