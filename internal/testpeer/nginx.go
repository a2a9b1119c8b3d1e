package testpeer

import (
	"fmt"
	"os"
	"os/exec"
)

// NginxConfig returns an nginx.conf that runs in the foreground with every
// file it writes under dir (run it with `nginx -p dir -c <file>`), with
// httpBody inside its http block. As root, workers run as root too, so they
// can read keys in a test's private folder.
func NginxConfig(dir string, workers int, httpBody string) string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	return fmt.Sprintf(`%[1]s
worker_processes %[2]d;
daemon off;
error_log %[3]s/error.log info;
pid %[3]s/nginx.pid;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[3]s/body;
	proxy_temp_path %[3]s/proxy;
	fastcgi_temp_path %[3]s/fastcgi;
	uwsgi_temp_path %[3]s/uwsgi;
	scgi_temp_path %[3]s/scgi;
%[4]s
}
`, user, workers, dir, httpBody)
}

// NginxBin returns the nginx binary: the one on PATH, else Debian's
// /usr/sbin/nginx (not on a non-root user's PATH).
func NginxBin() (string, error) {
	bin, err := exec.LookPath("nginx")
	if err == nil {
		return bin, nil
	}
	if _, statErr := os.Stat("/usr/sbin/nginx"); statErr == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", fmt.Errorf("nginx is not installed (apt-get install -y nginx; .ci/run does): %w", err)
}
