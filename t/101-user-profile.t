# User service, /api/profile: the caller's profile (U5, U6), another
# user's (U13), and the profile image (U14).

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;
use Test::Nginx::Chat;
use File::Temp qw(tempdir);

# the images' directory outlives the server root, which Test::Nginx::Socket
# makes anew for every block: the checks look at the files of earlier ones
$ENV{TEST_NGINX_UPLOADS} = tempdir('chat-uploads-XXXXXX', TMPDIR => 1,
                                   CLEANUP => 1);

our $Config = <<'EOF';
location /api/ {
    client_max_body_size 6m;
    client_body_buffer_size 6m;
    chat_user_upload_dir $TEST_NGINX_UPLOADS;
    chat_user;
}
EOF

our $Png = "\x89PNG\r\n\x1a\n" . ("\0" x 64);
our $Jpeg = "\xff\xd8\xff\xe0" . ("j" x 64);
our $Gif = "GIF89a" . ("g" x 64);
our $Webp = "RIFF\x20\0\0\0WEBPVP8 " . ("w" x 64);

sub multipart {
    my ($filename, $data, $field) = @_;
    $field //= 'file';
    my $b = 'XyZzy42';
    return ("multipart/form-data; boundary=$b",
            "--$b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
            . "hello\r\n"
            . "--$b\r\nContent-Disposition: form-data; name=\"$field\"; "
            . "filename=\"$filename\"\r\nContent-Type: image/png\r\n\r\n"
            . "$data\r\n--$b--\r\n");
}

# an upload through the running nginx: (status, decoded body)
sub upload {
    my ($token, $filename, $data, $field) = @_;
    my ($type, $body) = multipart($filename, $data, $field);
    my $res = http_request(POST => '/api/profile/me/image',
                           { Authorization => "Bearer $token",
                             'Content-Type' => $type }, $body, 10);
    return ($res->{status}, json_decode($res->{body}), $res->{body});
}

workers(2);
master_on();
no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;
    chat_block($block);
    $block->set_value(config => $Config) unless defined $block->config;
});

run_tests();

__DATA__

=== TEST 1: the caller's profile; no email in UserProfile
--- init
$main::Alice = ChatStack::register_user(display_name => 'Alice');
$main::Bob = ChatStack::register_user();
$ENV{TEST_NGINX_ALICE} = ChatStack::login_user($main::Alice);
$ENV{TEST_NGINX_BOB} = ChatStack::login_user($main::Bob);
$ENV{TEST_NGINX_ALICE_ID} = $main::Alice->{id};
$ENV{TEST_NGINX_ALICE_NAME} = $main::Alice->{username};
$ENV{TEST_NGINX_BOB_ID} = $main::Bob->{id};
--- request
GET /api/profile/me
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200
--- response_body chomp
{"id":$TEST_NGINX_ALICE_ID,"username":"$TEST_NGINX_ALICE_NAME","display_name":"Alice","status_message":null,"is_online":true,"last_seen_at":null}



=== TEST 2: no GET /api/profile
--- request
GET /api/profile
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 404
--- response_body chomp
{"detail":"Not Found"}



=== TEST 3: a partial update; unknown fields are ignored
--- request
PUT /api/profile/me
{"status_message":"Zoë's status 😀","nickname":"ignored"}
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200
--- response_body chomp
{"id":$TEST_NGINX_ALICE_ID,"username":"$TEST_NGINX_ALICE_NAME","display_name":"Alice","status_message":"Zoë's status 😀","is_online":true,"last_seen_at":null}



=== TEST 4: null leaves a field unchanged, "" stores ""
--- request
PUT /api/profile/me
{"display_name":"","status_message":null}
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200
--- response_body chomp
{"id":$TEST_NGINX_ALICE_ID,"username":"$TEST_NGINX_ALICE_NAME","display_name":"","status_message":"Zoë's status 😀","is_online":true,"last_seen_at":null}



=== TEST 5: an empty object is a valid update
--- request
PUT /api/profile/me
{}
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200
--- response_body_like: "display_name":""



=== TEST 6: the update published UserProfileUpdated
--- init
my @e = split /\n/, ChatStack::redis_cmd('XREVRANGE', 'user.events', '+',
                                         '-', 'COUNT', '1');
$e[4] =~ /"user_id": $main::Alice->{id}, "display_name": "", "status_message": "Zo\\u00eb's status \\ud83d\\ude00", "__event_type__": "UserProfileUpdated"\}$/
    or die "event: @e\n";
--- request
GET /api/profile/me
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200



=== TEST 7: lengths and types
--- request eval
"PUT /api/profile/me\n" . '{"display_name":"' . ("x" x 101) . '","status_message":5}'
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 422
--- response_body_like: ^\{"detail":\[\{"type":"string_too_long","loc":\["body","display_name"\],"msg":"String should have at most 100 characters".*\{"type":"string_type","loc":\["body","status_message"\]



=== TEST 8: 500 code points of status are fine
--- request eval
"PUT /api/profile/me\n" . '{"status_message":"' . ("€" x 500) . '"}'
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200



=== TEST 9: the body is checked before the token (422 first)
--- request
PUT /api/profile/me
{"display_name":
--- error_code: 422



=== TEST 10: another user's profile (U13) is U8's
--- request
GET /api/profile/$TEST_NGINX_BOB_ID
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200
--- response_body_like: ^\{"id":$TEST_NGINX_BOB_ID,"username":"\w+","display_name":null,"status_message":null,"is_online":true,"last_seen_at":null\}$



=== TEST 11: U13 errors
--- request eval
["GET /api/profile/abc", "GET /api/profile/0", "GET /api/profile/2147483000"]
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code eval
[422, 422, 404]
--- response_body eval
['{"detail":[{"type":"int_parsing","loc":["path","user_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"}]}',
 '{"detail":{"error":"validation_error","message":"user_id must be a positive integer","validation_errors":[{"field":"user_id","message":"Must be a positive integer","value":0}],"status_code":422}}',
 '{"detail":{"error":"resource_not_found","message":"User not found","details":{"resource":"User"},"status_code":404}}']



=== TEST 12: no token
--- request eval
["GET /api/profile/me", "PUT /api/profile/me\n{}"]
--- error_code eval
[401, 401]



=== TEST 13: image uploads: PNG, JPEG, GIF, WebP by their bytes
--- init
for my $img (['a.png', $main::Png, 'png'], ['b.bin', $main::Jpeg, 'jpg'],
             ['c', $main::Gif, 'gif'], ['d.png', $main::Webp, 'webp'])
{
    my ($status, $body, $raw) = main::upload($ENV{TEST_NGINX_ALICE},
                                             $img->[0], $img->[1]);
    die "upload $img->[0]: $status $raw\n" unless $status == 200;
    $body->{profile_image_url} =~ m{^/uploads/$main::Alice->{id}-[0-9a-f]{16}\.$img->[2]$}
        or die "url: $body->{profile_image_url}\n";
    (my $file = $body->{profile_image_url})
        =~ s{^/uploads}{$ENV{TEST_NGINX_UPLOADS}};
    open(my $fh, '<:raw', $file) or die "$file: $!\n";
    local $/;
    my $data = <$fh>;
    die "content of $file\n" unless $data eq $img->[1];
    die "old file kept: $main::Last\n" if $main::Last && -e $main::Last;
    $main::Last = $file;
}
--- request
GET /api/profile/me
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200



=== TEST 14: rejected uploads are JSON 4xx and store nothing
--- init
my @cases = (
    ['x.png', "not an image at all", 400, 'INVALID_INPUT'],
    ['../../etc/passwd', $main::Png, 400, 'Invalid file name'],
    ['dir/a.png', $main::Png, 400, 'Invalid file name'],
    ['a.png', '', 400, 'empty'],
    ['a.png', $main::Png . ("z" x (5 * 1024 * 1024)), 413, 'FILE_TOO_LARGE'],
);
for my $c (@cases) {
    my ($status, $body, $raw) = main::upload($ENV{TEST_NGINX_ALICE},
                                             $c->[0], $c->[1]);
    die "$c->[0]: $status $raw\n" unless $status == $c->[2]
                                         && $raw =~ /\Q$c->[3]\E/;
}
my ($status, $body, $raw) = main::upload($ENV{TEST_NGINX_ALICE}, 'a.png',
                                         $main::Png, 'picture');
die "no file field: $status $raw\n" unless $status == 400
                                            && $raw =~ /No file uploaded/;
die "kept: $main::Last\n" unless -e $main::Last;
--- request
POST /api/profile/me/image
{"file":"not multipart"}
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
Content-Type: application/json
--- error_code: 400
--- response_body_like: "error":"INVALID_INPUT"



=== TEST 15: delete the image
--- request
DELETE /api/profile/me/image
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200
--- response_body_like: ^\{"id":$TEST_NGINX_ALICE_ID,.*"profile_image_url":null\}$



=== TEST 16: the file is gone too
--- init
die "still there: $main::Last\n" if -e $main::Last;
--- request
DELETE /api/profile/me/image
--- more_headers
Authorization: Bearer $TEST_NGINX_ALICE
--- error_code: 200



=== TEST 17: authenticated requests refresh the presence TTL (DEV-5)
--- init
ChatStack::redis_cmd('EXPIRE', "user:online:$main::Bob->{id}", 100);
--- request
GET /api/profile/me
--- more_headers
Authorization: Bearer $TEST_NGINX_BOB
--- error_code: 200



=== TEST 18: the TTL is back to an hour
--- init
my $ttl = ChatStack::redis_cmd('TTL', "user:online:$main::Bob->{id}");
die "ttl $ttl\n" unless $ttl > 3500;
--- request
GET /api/profile/me
--- more_headers
Authorization: Bearer $TEST_NGINX_BOB
--- error_code: 200
