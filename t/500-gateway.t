# The shipped conf/nginx.conf: rendered as build.sh renders it, with a low
# rate limit, on ports of its own.  Routing to every service, the service
# listeners, the rate limit (JSON 429 with Retry-After), request ids,
# security headers, CORS preflight without a token, nginx's own errors as
# JSON.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat qw(:all);
use ChatStack;
use Cwd qw(getcwd);
use File::Path qw(make_path remove_tree);
use Time::HiRes qw(sleep);

my $top = getcwd();
my $prefix = ($ENV{TEST_NGINX_SERVROOT} // "$top/t/servroot") . '_gateway';
my $nginx = $ENV{TEST_NGINX_BINARY} // '/usr/sbin/nginx';
my %port = map { $_ => free_port() } qw(http user friend msg notify);

remove_tree($prefix);
make_path("$prefix/conf", "$prefix/logs", "$prefix/tmp");

{
    local $/;
    open(my $in, '<', "$top/conf/nginx.conf") or die "conf: $!";
    my $conf = <$in>;
    close $in;

    my $modules = join "\n", map { "load_module $_;" }
                  split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
    my %token = (
        PREFIX => $prefix, LOAD_MODULES => $modules,
        DOCS => ($ENV{TEST_NGINX_WORK} // "$top/.work") . '/docs',
        HTTP_PORT => $port{http}, USER_PORT => $port{user},
        FRIEND_PORT => $port{friend}, MSG_PORT => $port{msg},
        NOTIFY_PORT => $port{notify},
        MYSQL_PORT => $ENV{TEST_NGINX_MYSQL_PORT} // 13306,
        MYSQL_DATABASE => $ENV{TEST_NGINX_MYSQL_DATABASE} // 'chat_test',
        REDIS_PORT => $ENV{TEST_NGINX_REDIS_PORT} // 16379,
        MONGO_PORT => $ENV{TEST_NGINX_MONGO_PORT} // 27117,
        MONGO_DATABASE => ChatStack::mongo_database(),
        JWT_SECRET => $ENV{TEST_NGINX_JWT_SECRET}
                      // 'change-me-nginx-chat-secret',
        RATE_LIMIT => 10, RATE_BURST => 9,
        LIMIT_KEY => '$binary_remote_addr',
    );
    $conf =~ s/\@([A-Z_]+)\@/$token{$1} \/\/ die "no value for $1\n"/ge;

    open(my $out, '>', "$prefix/conf/nginx.conf") or die "conf: $!";
    print {$out} $conf;
    close $out;

    system('cp', "$top/conf/chat-errors.conf", "$prefix/conf/") == 0
        or die "cp failed\n";
}

is(system($nginx, '-p', "$prefix/", '-c', 'conf/nginx.conf', '-e',
          'logs/error.log', '-t', '-q'), 0, 'the rendered conf passes -t');
is(system($nginx, '-p', "$prefix/", '-c', 'conf/nginx.conf', '-e',
          'logs/error.log'), 0, 'nginx starts');

my $base = "http://127.0.0.1:$port{http}";

for (1 .. 50) {
    last if (http_request(GET => "$base/health")->{status} // 0) == 200;
    sleep 0.1;
}

$ChatStack::Base = $base;

# the gateway and the service listeners
{
    my $res = http_request(GET => "$base/health");
    is($res->{body}, '{"status":"healthy","service":"api-gateway"}',
       'gateway health');
    like($res->{headers}{'x-request-id'} // '', qr/^[0-9a-f]{32}$/,
         'a request id is made');
    is($res->{headers}{'x-content-type-options'}, 'nosniff',
       'security headers');
    is($res->{headers}{'x-frame-options'}, 'DENY', '...');

    $res = http_request(GET => "$base/health", { 'X-Request-ID' => 'abc-1' });
    is($res->{headers}{'x-request-id'}, 'abc-1', 'a client request id is kept');

    my %names = (user => 'User Service', friend => 'Friend Service',
                 msg => 'Chat Service');
    for my $svc (sort keys %names) {
        $res = http_request(GET => "http://127.0.0.1:$port{$svc}/health");
        is($res->{body},
           qq({"status":"healthy","service":"$names{$svc}"}),
           "$svc listener health");
    }

    for my $path ('/api/auth/logout', '/api/profile/me', '/api/users/1',
                  '/api/friends/list', '/api/chat-rooms',
                  '/api/messages/1')
    {
        $res = http_request($path eq '/api/auth/logout' ? 'POST' : 'GET',
                            "$base$path");
        is($res->{status}, 401, "$path is routed (401 without a token)");
        is($res->{body}, '{"detail":"Not authenticated"}', '... in JSON');
    }

    $res = http_request(GET => "$base/api/nothing");
    is($res->{status}, 404, 'an unknown service: 404');
    is($res->{body}, '{"detail":"No service found for path: /api/nothing"}',
       '... in the gateway shape');

    $res = http_request(GET => "$base/api/messages/stream/1");
    is($res->{status}, 401, 'the room stream is routed');
}

# nginx's own rejections are JSON too
{
    my $res = http_request(GET => "$base/api/users/%00");
    is($res->{status}, 400, 'a NUL in the path: 400');
    is($res->{body}, '{"detail":"Bad Request"}', '... in JSON');
}

# the API reference and the browser client, from what ./build.sh puts
# under .work/docs
SKIP: {
    my $docs = ($ENV{TEST_NGINX_WORK} // "$top/.work") . '/docs';
    skip 'no .work/docs: run ./build.sh test', 8
        unless -f "$docs/openapi.json";

    my $res = http_request(GET => "$base/openapi.json");
    is($res->{status}, 200, 'the gateway serves /openapi.json');
    like($res->{body}, qr/^\{"openapi":"3\.1\.0"/, '... OpenAPI 3.1');

    $res = http_request(GET => "http://127.0.0.1:$port{user}/openapi.json");
    like($res->{body}, qr/"title":"nginx-chat: User Service"/,
         'a service listener serves its part');

    $res = http_request(GET => "$base/docs/");
    like($res->{body}, qr/swagger-ui/, 'Swagger UI at /docs/');

    $res = http_request(GET => "$base/app/");
    is($res->{status}, 200, 'the browser client at /app/');
    like($res->{headers}{'content-type'} // '', qr{^text/html}, '... a page');
    like($res->{headers}{'content-security-policy'} // '',
         qr/script-src 'self'/, '... under the gateway\'s policy');

    $res = http_request(GET => "$base/");
    is($res->{body}, '{"detail":"Not Found"}',
       "the gateway's / keeps its JSON answer");
}

# CORS preflight on a protected path needs no token (DEV-11)
{
    my $res = http_request(OPTIONS => "$base/api/profile/me",
                           { Origin => 'https://app.example',
                             'Access-Control-Request-Method' => 'GET' });
    is($res->{status}, 200, 'preflight without a token');
    is($res->{headers}{'access-control-allow-origin'}, 'https://app.example',
       '... allowed');
}

# the rate limit: 10 a minute here, the 11th within it is a JSON 429
{
    my @status = map {
        http_request(GET => "$base/api/users/search?query=x")->{status}
    } 1 .. 14;
    my $limited = grep { $_ == 429 } @status;
    cmp_ok($limited, '>=', 1, "rate limited after the burst (@status)");

    my $res = http_request(GET => "$base/api/users/search?query=x");
    is($res->{status}, 429, 'then every request is a 429');
    is($res->{headers}{'retry-after'}, '60', 'Retry-After: 60');
    is($res->{body}, '{"error":"rate_limit_exceeded","message":"Too many '
                     . 'requests. Please slow down.","retry_after":60}',
       'the contract body');

    $res = http_request(GET => "$base/health");
    is($res->{status}, 200, '/health is not limited');
}

{
    open(my $fh, '<', "$prefix/logs/nginx.pid") or die "pid: $!";
    my $pid = <$fh>;
    chomp $pid;
    kill 'QUIT', $pid;
    for (1 .. 50) { last unless kill 0, $pid; sleep 0.1 }
    ok(!kill(0, $pid), 'nginx stopped');
}

done_testing();
