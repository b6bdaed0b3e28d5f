# The shipped conf/nginx.conf: rendered as build.sh renders it, with a low
# rate limit, on ports of its own.  Routing to every service, the service
# listeners, the rate limit (JSON 429 with Retry-After), request ids,
# security headers, CORS preflight without a token, nginx's own errors as
# JSON, the original gateway's 401 bodies on the gateway and the services'
# on their listeners, /health/services and /health/circuits.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat qw(:all);
use ChatStack;
use Cwd qw(getcwd);
use Time::HiRes qw(sleep);

my $top = getcwd();
my $prefix = ($ENV{TEST_NGINX_SERVROOT} // "$top/t/servroot") . '_gateway';

# the stack's conf/nginx.conf as build.sh renders it, a low rate limit
my $stack = stack_start($prefix, rate => 10);
my %port = %{ $stack->{port} };
my $base = $stack->{base};

ok($stack->{tested}, 'the rendered conf passes -t');
is(http_request(GET => "$base/health")->{status}, 200, 'nginx starts');

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

    # the original gateway's 401 (API.md 7.2): no token, or a bad one
    my $missing = '{"error":"unauthorized","message":"Missing '
                  . 'authentication token"}';
    my $invalid = '{"error":"unauthorized","message":"Invalid or expired '
                  . 'token"}';
    my $expired = make_jwt({ alg => 'HS256', typ => 'JWT' },
                           { sub => '1', type => 'access',
                             exp => time() - 60 },
                           $ENV{TEST_NGINX_JWT_SECRET}
                           // 'change-me-nginx-chat-secret');

    for my $case (['/api/auth/logout'], ['/api/profile/me'],
                  ['/api/users/1'], ['/api/friends/list', 'not-a-token'],
                  ['/api/chat-rooms', $expired],
                  ['/api/messages/1', 'a.b.c'])
    {
        my ($path, $token) = @$case;
        $res = http_request($path eq '/api/auth/logout' ? 'POST' : 'GET',
                            "$base$path",
                            $token ? { Authorization => "Bearer $token" }
                                   : {});
        is($res->{status}, 401, "$path is routed (401 "
           . ($token ? 'with a bad token)' : 'without a token)'));
        is($res->{body}, $token ? $invalid : $missing,
           '... in the gateway shape');
    }

    # the services' listeners keep the services' body
    for my $case ([user => '/api/profile/me'],
                  [friend => '/api/friends/list'],
                  [msg => '/api/chat-rooms'],
                  [notify => '/api/notifications'])
    {
        my ($svc, $path) = @$case;
        $res = http_request(GET => "http://127.0.0.1:$port{$svc}$path",
                            { Authorization => 'Bearer not-a-token' });
        is($res->{status}, 401, "$svc listener: $path 401");
        is($res->{body}, '{"detail":"Not authenticated"}',
           '... in the service shape');
    }

    $res = http_request(GET => "$base/api/nothing");
    is($res->{status}, 404, 'an unknown service: 404');
    is($res->{body}, '{"detail":"No service found for path: /api/nothing"}',
       '... in the gateway shape');

    $res = http_request(GET => "$base/api/messages/stream/1?access_token=x");
    is($res->{status}, 401, 'the room stream is routed');
    is($res->{body}, $invalid, '... a bad query token: the gateway shape');
}

# the gateway's health of the services and its circuit breakers, public
{
    my $res;
    for (1 .. 50) {
        $res = http_request(GET => "$base/health/services");
        last if ($res->{status} // 0) == 200;
        sleep 0.2;
    }

    is($res->{status}, 200, '/health/services: 200 with every datastore up');
    is($res->{body}, '{"gateway":"healthy","services":{'
       . join(',', map {
             my ($name, $svc) = @$_;
             qq("$name":{"status":"healthy",)
             . qq("url":"http://127.0.0.1:$port{$svc}"})
         } [user => 'user'], [friend => 'friend'], [chat => 'msg'],
           [notification => 'notify'])
       . '}}', '... naming each service listener');
    is($res->{headers}{'x-request-id'} ? 1 : 0, 1, '... a gateway response');

    $res = http_request(GET => "$base/health/circuits");
    is($res->{status}, 200, '/health/circuits: 200');
    my $c = json_decode($res->{body}) // {};
    is_deeply([sort keys %$c], [qw(mongodb mysql redis)],
              '... a breaker per datastore');
    is_deeply($c->{redis}, { state => 'closed', failure_count => 0,
                             retry_after => 0 }, '... closed');

    $res = http_request(POST => "$base/health/circuits");
    is($res->{status}, 405, '... GET only');
}

# the services' README paths (no /api) on the service listeners: the same
# handler, the same answers; the gateway keeps /api only
{
    my %svc = (user => 'user', friend => 'friend', msg => 'msg',
               notify => 'notify');
    my $user = register_user();
    my $token = login_user($user);
    my %auth = (Authorization => "Bearer $token");

    # every path of the README's lists (API.md 0), with requests that
    # change nothing: reads, and writes refused for their body or id
    my @same = (
        [user   => POST => '/auth/register'],
        [user   => POST => '/auth/login'],
        [user   => POST => '/auth/login/json'],
        [user   => PUT  => '/auth/login/json'],
        [user   => GET  => '/profile/me'],
        [user   => PUT  => '/profile/me', '{"display_name":""}'],
        [user   => GET  => "/profile/$user->{id}"],
        [user   => POST => '/profile/me/image'],
        [user   => GET  => "/users/search?query=$user->{username}"],
        [user   => GET  => "/users/$user->{id}"],
        [user   => GET  => '/users/0'],
        [user   => GET  => "/users?user_ids=$user->{id}"],
        [user   => GET  => "/users/$user->{id}/exists"],
        [friend => POST => '/friends/request'],
        [friend => PUT  => '/friends/status/0', '{}'],
        [friend => GET  => '/friends/list'],
        [friend => GET  => '/friends/requests'],
        [friend => DELETE => '/friends/request/0'],
        [friend => GET  => '/friends/search?query=zz'],
        [msg    => GET  => '/chat-rooms'],
        [msg    => GET  => '/chat-rooms/check/0'],
        [msg    => GET  => '/chat-rooms/x'],
        [msg    => POST => '/messages/0'],
        [msg    => GET  => '/messages/0'],
        [msg    => POST => '/messages/read'],
        [msg    => GET  => '/messages/room/1/unread-count'],
        [msg    => GET  => '/messages/stream/0'],
        [notify => GET  => '/notifications'],
        [notify => GET  => '/notifications/stream?last_event_id=x',
                   undef, { Authorization => 'Bearer not-a-token' }],
        [notify => POST => '/notifications/read'],
    );

    for my $c (@same) {
        my ($svc, $method, $path, $body, $hdr) = @$c;
        my $url = "http://127.0.0.1:$port{$svc}";
        $body //= $method eq 'POST' ? '{}' : undef;
        my %h = (%{ $hdr // \%auth },
                 $body ? ('Content-Type' => 'application/json') : ());
        my $api = http_request($method, "$url/api$path", \%h, $body);
        my $bare = http_request($method, "$url$path", \%h, $body);
        ok(defined $bare->{status} && $bare->{status} == $api->{status}
           && $bare->{body} eq $api->{body},
           "$svc listener: $method $path answers as /api$path "
           . "($api->{status})")
            or diag("$bare->{status} $bare->{body}");
    }

    my $res = http_request(POST => "http://127.0.0.1:$port{user}/auth/login/json",
                           { 'Content-Type' => 'application/json' },
                           json_encode({ email => $user->{email},
                                         password => $user->{password} }));
    is($res->{status}, 200, 'user listener: POST /auth/login/json logs in');

    $res = http_request(GET => "http://127.0.0.1:$port{msg}/nothing");
    is($res->{status}, 404, 'an unknown path on a service listener: 404');
    is($res->{body}, '{"detail":"Not Found"}', '... in JSON');

    $res = http_request(GET => "$base/profile/me", \%auth);
    is($res->{status}, 404, 'the gateway does not answer /profile/me');
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
    my @res = map {
        http_request(GET => "$base/api/users/search?query=x")
    } 1 .. 14;
    my @status = map { $_->{status} } @res;
    my $limited = grep { $_ == 429 } @status;
    cmp_ok($limited, '>=', 1, "rate limited after the burst (@status)");

    # optional authentication at the original gateway (API.md 7.2)
    is($res[0]{status}, 401, 'users/search without a token: 401');
    is($res[0]{body}, '{"detail":"Not authenticated"}',
       '... from the user service, in its shape');

    my $res = http_request(GET => "$base/api/users/search?query=x");
    is($res->{status}, 429, 'then every request is a 429');
    is($res->{headers}{'retry-after'}, '60', 'Retry-After: 60');
    is($res->{body}, '{"error":"rate_limit_exceeded","message":"Too many '
                     . 'requests. Please slow down.","retry_after":60}',
       'the contract body');

    for my $path ('/health', '/health/services', '/health/circuits') {
        $res = http_request(GET => "$base$path");
        is($res->{status}, 200, "$path is not limited");
    }
}

ok(stack_stop($stack), 'nginx stopped');

done_testing();
