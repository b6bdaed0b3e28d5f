# Configuration checks: every chat_* directive of every module refuses a
# bad value at "nginx -t", with an error naming it and pointing at its
# line, and takes a good one; a reload with a bad chat_mongo URI fails
# and the old workers go on serving.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use Test::Nginx::Chat::Process qw(nginx_binary);
use ChatStack;
use File::Path qw(make_path remove_tree);
use Cwd qw(cwd);
use Time::HiRes qw(sleep);

my $Dir = cwd() . "/t/servroot_config";
my $Secret = 'chat_jwt_secret config-test-secret-of-more-than-32-bytes;';
my $Mongo = '"mongodb://127.0.0.1:27017/?serverSelectionTimeoutMS=3000"';

remove_tree($Dir);
make_path("$Dir/conf", "$Dir/logs", "$Dir/data/uploads");

sub spew {
    my ($path, $text) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh $text;
    close $fh;
}

spew("$Dir/data/secret", ('0123456789abcdef' x 4) . "\n");
spew("$Dir/data/short", "file-secret\n");
spew("$Dir/data/empty", "\n");
spew("$Dir/data/plain", "not a directory\n");


# directive => where it goes (http or location), bad values, good values;
# a value is the directive's arguments, or a hash: { args, extra (more
# lines in http{}), main (lines before events{}), error (what the message
# says instead of the directive's name), line (0: the error is reported
# at the end of http{}) }

my @Table = (
    chat_mysql => http => [
        '127.0.0.1:70000 user=chat database=chat',
        '127.0.0.1:0 user=chat database=chat',
        'nosuch.invalid:3306 user=chat database=chat',
        'unix:/tmp/mysql.sock user=chat database=chat',
        '127.0.0.1 user=chat database=chat pool=0',
        '127.0.0.1 user=chat database=chat pool=1025',
        '127.0.0.1 user=chat database=chat pool=four',
        '127.0.0.1 user=chat database=chat queue=-1',
        '127.0.0.1 user=chat database=chat colour=blue',
        '127.0.0.1 user=chat',
        '127.0.0.1 database=chat',
        '127.0.0.1 user=chat database=' . ('d' x 65),
        { args => '127.0.0.1 user=chat password=chatpw database=chat',
          error => qr/the password of "chat_mysql" is an example/ },
        '127.0.0.1 user=chat password=CHANGE-ME database=chat',
    ], [
        "127.0.0.1:3306 user=chat password=pw database=chat pool=4 queue=0",
        "localhost user=chat database=chat",
    ],

    chat_mysql_connect_timeout => http => [ 'soon', '-1s' ], [ '1s', '0' ],
    chat_mysql_timeout => http => [ 'soon' ], [ '5s', '0' ],

    chat_redis => http => [
        '127.0.0.1:65536',
        'nosuch.invalid',
        'unix:/tmp/redis.sock',
        '127.0.0.1 db=-1',
        '127.0.0.1 db=one',
        '127.0.0.1 timeout=1s',
    ], [ '127.0.0.1:6379 password=pw db=2', '127.0.0.1' ],

    chat_redis_timeout => http => [ 'soon' ], [ '3s', '0' ],

    chat_mongo => http => [
        '"not a uri"',
        '"mongodb//127.0.0.1"',
        '"mongodb://127.0.0.1:99999"',
        '"mongodb://127.0.0.1/?colour=blue"',
        '"mongodb://127.0.0.1/?serverSelectionTimeoutMS=soon"',
        "$Mongo database=a.b",
        "$Mongo database=a/b",
        "$Mongo database=" . ('d' x 64),
        "$Mongo db=chat",
    ], [
        "$Mongo database=chat",
        '"mongodb://u:p@127.0.0.1:27017,127.0.0.2/admin?replicaSet=rs0"',
    ],

    chat_mongo_thread_pool => http => [
        { args => 'nosuch', error => qr/unknown thread pool "nosuch"/ },
    ], [
        'default',
        { args => 'chat_mongo', main => 'thread_pool chat_mongo threads=2;' },
    ],

    chat_thread_pool => http => [
        { args => 'nosuch', error => qr/unknown thread pool "nosuch"/ },
    ], [
        'default',
        { args => 'chat_cpu', main => 'thread_pool chat_cpu threads=2;' },
    ],

    chat_cpu_queue_size => http => [ '0', '-1', 'many' ], [ '1', '64' ],
    chat_cpu_queue_timeout => http => [ 'soon' ], [ '1s', '0' ],

    chat_jwt_secret => http => [
        '""',
        'too-short-a-secret',
        '0123456789abcdef',
        { args => 'change-me-nginx-chat-secret',
          error => qr/the secret of "chat_jwt_secret" is an example/ },
        { args => 'a-secret-of-31-bytes-0123456789',
          error => qr/"chat_jwt_secret" is shorter than 32 bytes: make one/
                   . qr/ with "openssl rand -hex 32"/ },
    ], [
        'a-secret-of-32-bytes-0123456789a',
        '"with space, and more than 32 bytes"',
        { args => 's3cret', extra => 'chat_development on;' },
        { args => 'change-me-nginx-chat-secret',
          extra => 'chat_development on;' },
    ],

    chat_jwt_secret_file => http => [
        "$Dir/data/nosuch",
        "$Dir/data/empty",
        "$Dir/data/short",
    ], [
        "$Dir/data/secret",
        { args => "$Dir/data/short", extra => 'chat_development on;' },
    ],

    chat_development => http => [ 'yes' ], [ 'on', 'off' ],

    chat_jwt_lifetime => http => [ '0', 'long' ], [ '2h', '1s' ],

    chat_cors_origins => location => [
        "'not an origin'",
        'localhost:3000',
        'http://a.example/',
        'http://a.example/path',
        'http://a.example:0',
        'http://a.example:65536',
        'http://',
        '://a.example',
        'null',
        '"http://a.example *"',
    ], [
        '*',
        'http://localhost:3000 https://a.example:8443 http://[::1]:8080',
        'chrome-extension://abcdef',
    ],

    chat_json_max_body_size => http => [ '0', '1', 'big' ], [ '64k', '2' ],
    chat_events_maxlen => http => [ '0', 'many' ], [ '100000', '1' ],
    chat_sse_keepalive => http => [ '0', '500ms', 'soon' ], [ '30s', '1s' ],
    chat_sse_max_queue => http => [ '0', '1k', 'big' ], [ '256k', '4k' ],

    chat_circuit_failures => http => [ '-1', 'many' ], [ '5', '0' ],
    chat_circuit_cooldown => http => [ '0', '50ms', 'soon' ],
                                     [ '5s', '100ms' ],
    chat_auth_error_style => location => [ 'original', '' ],
                                         [ 'gateway', 'service' ],

    chat_service_name => location => [ '""', "\"a\tb\"" ], [ 'users' ],
    chat_internal => location => [ 'yes' ], [ 'on', 'off' ],
    chat_unprefixed => location => [ 'yes' ], [ 'on', 'off' ],

    chat_health => location => [ 'now' ], [ '' ],
    chat_info => location => [ 'now' ], [ '' ],
    chat_ready => location => [ 'now' ], [ '' ],
    chat_health_services => location => [
        'user',
        'user=',
        'users=http://127.0.0.1:8005',
        'user=ftp://127.0.0.1',
        'user=http://',
        'user=http:///path',
        'user=http://a.example user=http://b.example',
    ], [
        'user=http://127.0.0.1:8005',
        'user=http://127.0.0.1:8005 friend=http://127.0.0.1:8003 '
        . 'chat=https://chat.example notification=http://[::1]:8004',
    ],
    chat_health_circuits => location => [ 'now' ], [ '' ],
    chat_metrics => location => [ 'now' ], [ '' ],
    chat_diagnostics => location => [ 'now' ], [ '' ],

    chat_user => location => [ 'now' ], [ '' ],
    chat_user_upload_dir => location => [
        '/nonexistent/chat/uploads',
        "$Dir/data/plain",
        "$Dir/data/plain/uploads",
        '""',
    ], [
        "$Dir/data/uploads",
        "$Dir/data/new-uploads",
        'uploads',
    ],
    chat_user_image_url => location => [
        'uploads/', 'ftp://a.example/', '""', '"/uploads/?x=1"',
    ], [ '/uploads/', 'https://cdn.example/images/' ],
    chat_user_image_max_size => location => [ '0', 'big' ], [ '5m', '1' ],

    chat_friend => location => [ 'now' ], [ '' ],
    chat_msg => location => [ 'now' ], [ '' ],

    chat_notify => location => [ 'now' ], [ '' ],
    chat_notify_consumer => http => [
        'maybe',
        { args => 'on', line => 0 },
    ], [
        'off',
        { args => 'on',
          extra => "chat_mysql 127.0.0.1 user=chat database=chat;\n"
                 . "chat_redis 127.0.0.1;\nchat_mongo $Mongo;" },
    ],
    chat_notify_group => http => [ '""', "\"a\nb\"" ], [ 'notifications' ],
    chat_notify_claim_idle => http => [ '50ms', '0', 'soon' ],
                                      [ '30s', '100ms' ],
    chat_notify_batch => http => [ '0', '1001', 'many' ], [ '1', '1000' ],
);


# every chat_* directive in the modules' command tables has a row

my %rows;
for (my $i = 0; $i < @Table; $i += 4) {
    $rows{ $Table[$i] } = 1;
}

my @directives;
for my $file (glob 'ngx_chat_*_module/*.c') {
    open my $fh, '<', $file or die "$file: $!";
    my $src = do { local $/; <$fh> };
    push @directives, $src =~ /ngx_string\("(chat_\w+)"\),\s*\n\s*NGX_HTTP_/g;
}

cmp_ok(scalar @directives, '>=', 30, scalar(@directives) . ' directives');
is_deeply([ grep { !$rows{$_} } sort @directives ], [],
          'every directive has a row');


# a configuration with one value; its line number

sub config {
    my ($name, $where, $v) = @_;

    $v = { args => $v } unless ref $v;

    my $line = "$name" . (length $v->{args} ? " $v->{args}" : '') . ';';
    my $c = '';

    for my $so (split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '') {
        $c .= "load_module $so;\n";
    }

    $c .= "error_log logs/error.log;\npid logs/nginx.pid;\n";
    $c .= "$v->{main}\n" if $v->{main};
    $c .= "events {}\n\nhttp {\n";
    $c .= "access_log off;\n";
    $c .= "$Secret\n" unless $name =~ /^chat_jwt_secret/;
    $c .= "$v->{extra}\n" if $v->{extra};

    my $at;

    if ($where eq 'http') {
        $c .= "$line\n";
        $at = ($c =~ tr/\n//);
    }

    $c .= "server {\nlisten 127.0.0.1:1;\nlocation / {\n";

    if ($where eq 'location') {
        $c .= "$line\n";
        $at = ($c =~ tr/\n//);
    }

    $c .= "}\n}\n}\n";

    return ($c, $at, $v);
}


sub nginx_t {
    my ($conf) = @_;

    spew("$Dir/conf/nginx.conf", $conf);

    my $bin = nginx_binary();
    my $out = `'$bin' -t -p '$Dir/' -c conf/nginx.conf -e logs/error.log 2>&1`;

    return ($? >> 8, $out);
}


for (my $i = 0; $i < @Table; $i += 4) {
    my ($name, $where, $bad, $good) = @Table[$i .. $i + 3];

    for my $value (@$bad) {
        my ($conf, $at, $v) = config($name, $where, $value);
        my ($rc, $out) = nginx_t($conf);
        my $what = "$name $v->{args}";

        $what =~ s/\s+/ /g;

        isnt($rc, 0, "bad: $what: nginx -t fails");
        note($out);

        my $error = $v->{error} // qr/"\Q$name\E"/;
        like($out, qr/\[emerg\].*$error/, "... naming it") or diag($out);

        if ($v->{line} // 1) {
            like($out, qr/\[emerg\].*nginx\.conf:$at\b/,
                 "... at its line ($at)") or diag($out);
        }
    }

    for my $value (@$good) {
        my ($conf, undef, $v) = config($name, $where, $value);
        my ($rc, $out) = nginx_t($conf);
        my $what = "$name $v->{args}";

        $what =~ s/\s+/ /g;

        is($rc, 0, "good: $what: nginx -t passes") or diag($out);
    }
}

ok(!-e "$Dir/data/new-uploads", 'nginx -t creates no upload directory');


# ---- a reload with a bad chat_mongo URI keeps the old workers

my %base = (
    workers     => 2,
    master      => 1,
    log_level   => 'notice',
    main_config => chat_main_config(),
    config      => 'location = /health { chat_health; }'
                 . ' location /api/ { chat_user; }',
);

my $good = chat_http_config();
my $ngx = start_nginx_with(%base, http_config => $good);

$ChatStack::Base = $ngx->url('');

my $user = register_user();
my $token = login_user($user);

sub me_status {
    my ($status) = api(GET => '/api/profile/me', $token);
    return $status;
}

is(me_status(), 200, 'before the reload: profile/me answers');

my @workers;
for (1 .. 50) {
    @workers = $ngx->worker_pids;
    last if @workers == 2;
    sleep 0.1;
}
is(scalar @workers, 2, 'two workers');

(my $bad = $good) =~ s{chat_mongo "mongodb://}{chat_mongo "mongodb//}
    or die "no chat_mongo line in chat_http_config()\n";

my $offset = $ngx->error_log_size;

$ngx->configure(http_config => $bad);
spew($ngx->servroot . '/conf/nginx.conf', $ngx->conf_text);

ok($ngx->reload, 'HUP sent with a bad chat_mongo URI');

my $log = '';
for (1 .. 50) {
    $log = $ngx->read_error_log($offset);
    last if $log =~ /\[emerg\]/;
    sleep 0.1;
}

like($log, qr/\[emerg\].*invalid URI in "chat_mongo" directive/,
     'the error log shows the emerg, naming chat_mongo');
like($log, qr/nginx\.conf:\d+/, '... with its file and line');

sleep 1;

ok($ngx->is_running, 'the master runs');
is_deeply([ $ngx->worker_pids ], \@workers, 'the same workers');
is(me_status(), 200, 'profile/me still answers');

my ($st, $body) = api(GET => '/health');
is($st, 200, '/health still answers');

unlike($ngx->read_error_log($offset), qr/exited|cannot be respawned/,
       'no worker exited');

# the good configuration is taken again

$ngx->configure(http_config => $good);
spew($ngx->servroot . '/conf/nginx.conf', $ngx->conf_text);

ok($ngx->reload, 'HUP sent with the good configuration');

my $renewed = 0;
for (1 .. 50) {
    my @now = $ngx->worker_pids;
    if (@now == 2 && !grep { my $p = $_; grep { $_ == $p } @workers } @now)
    {
        $renewed = 1;
        last;
    }
    sleep 0.1;
}

ok($renewed, 'new workers after a good reload');
is(me_status(), 200, 'profile/me answers from them');

stop_nginx();
remove_tree($Dir);

done_testing();
